"""MTCNN (Zhang et al. 2016) from facenet-pytorch, whose weights ship inside the wheel.

detect() is facenet-pytorch's own cascade (P-Net -> R-Net -> O-Net, thresholds 0.6/0.7/0.7).
It runs under no_grad and ends in numpy, so face_loss() rebuilds the part an attacker needs:
the cascade's candidates and their R-Net/O-Net face logits, computed differentiably.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from faceshield import settings
from faceshield.models.base import AttackLoss, Detections, Detector

# how far (logits) above every stage's threshold a candidate must be for attack_loss to call
# the face surely found (stepping the astronaut's face down, the real cascade dropped it while
# candidates were still up to 1.2 logits over: non-maximum suppression had kept a neighbour)
SURE = 2.0


class MTCNNDetector(Detector):
    name = "MTCNN"
    differentiable = True

    def __init__(
        self, min_face_size: int = 20, margin: float = 1.0, max_candidates: int = 24, proposal_weight: float = 0.0
    ):
        from facenet_pytorch import MTCNN

        settings.apply_threads()
        self.mtcnn = MTCNN(keep_all=True, min_face_size=min_face_size, device="cpu").eval()
        for p in self.mtcnn.parameters():
            p.requires_grad_(False)
        self.thresholds = list(self.mtcnn.thresholds)
        self.threshold = self.thresholds[-1]
        # The loss pushes each candidate below (threshold - margin) in logit space, so that
        # 8-bit rounding of the result cannot lift a face back over the threshold.
        # max_candidates: how many candidates a step pushes down, per screening share. A step's
        # cost grows with it, the number of steps hardly: linzaer_1.jpg (52 faces) took the same
        # 98 steps to the same 13/255 with 24 as with 48 at two thirds of the time (with 12
        # it climbed to 16/255); portraits have fewer live candidates than either.
        self.margin, self.max_candidates = margin, max_candidates
        # > 0 adds P-Net's dense term (proposal_loss): no help to a per-image attack on large
        # faces, but a smooth signal over every window for a generator that must learn
        # from few steps what fools the first stage.
        self.proposal_weight = proposal_weight
        self._pnet = _logits_twin(self.mtcnn.pnet, "softmax4_1")
        self._rnet = _logits_twin(self.mtcnn.rnet, "softmax5_1")
        self._onet = _logits_twin(self.mtcnn.onet, "softmax6_1")
        self.note = f"white-box; stage thresholds {self.thresholds}"

    def to(self, device) -> MTCNNDetector:
        self.mtcnn.to(device)
        self.mtcnn.device = device
        return self

    @property
    def device(self):
        return next(self.mtcnn.parameters()).device

    def detect(self, pixels: np.ndarray) -> Detections:
        if min(pixels.shape[:2]) < self.mtcnn.min_face_size:
            return Detections.empty()
        with torch.no_grad():
            boxes, probs, points = self.mtcnn.detect(np.ascontiguousarray(pixels), landmarks=True)
        if boxes is None:
            return Detections.empty()
        return Detections(boxes.astype(np.float32), probs.astype(np.float32), points.astype(np.float32))

    def _scales(self, h: int, w: int) -> list[float]:
        """The image pyramid of facenet-pytorch's detect_face."""
        m = 12.0 / self.mtcnn.min_face_size
        minl, scale, scales = min(h, w) * m, m, []
        while minl >= 12:
            scales.append(scale)
            scale *= self.mtcnn.factor
            minl *= self.mtcnn.factor
        return scales

    def face_loss(self, x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """How strongly MTCNN's cascade still finds a face inside `region`.

        x: (1, 3, H, W) in [0, 1]; region: (H, W) 0/1 mask of where faces must vanish.
        Re-runs the cascade: every P-Net window centred in the region with a face logit margin
        above (threshold - margin) is a candidate, and R-Net and O-Net judge its box, cropped
        and resampled exactly as facenet-pytorch does. The loss sums, over the candidates both
        still accept, how far R-Net and O-Net are above (threshold - margin). P-Net only
        proposes: it sees a face so coarsely that an 8/255 budget barely moves it, while one
        rejection by R-Net or O-Net is enough to drop a candidate. Zero once every candidate
        is rejected with room to spare. (During development, pushing each candidate's weakest
        stage, P-Net included, stalled on zidane.jpg's large faces; this hides all four.)
        """
        img = x * 255.0
        tau = self._taus()
        return self._candidate_loss(img, region, self._screen(img.detach(), region, tau), tau)[0]

    def attack_loss(self, every: int = 4) -> AttackLoss:
        """face_loss for one attack's steps, screening the candidates (the no-grad pass of the
        whole cascade over every P-Net window, most of a step's cost on a crowd photo: thousands
        of windows) only every `every` steps; between screenings the same candidates are pushed
        down (up to `every` x max_candidates of them, so a screening feeds the steps until the
        next). A zero loss is always confirmed by a fresh screening, so zero still means that
        no candidate is left. Its surely_found() is true while a candidate is SURE logits above
        all three stages' own thresholds."""
        return _ScreenedLoss(self, every)

    def _taus(self) -> list[float]:
        """Each stage's threshold as a logit margin, lowered by `margin`."""
        return [float(np.log(t / (1 - t))) - self.margin for t in self.thresholds]

    @torch.no_grad()
    def _screen(
        self, img: torch.Tensor, region: torch.Tensor, tau: list[float], share: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The candidates R-Net and O-Net both still accept, at most `share` x max_candidates of
        them (each crop's backward pass has a cost; the rest are taken in later steps): their
        boxes (N, 4) and P-Net logit margins (N,).

        P-Net's windows are judged in chunks, the most confident first, and the screening stops
        once a chunk has brought enough live candidates: on a crowd photo thousands of windows
        are alive at the start, and O-Net on all of them cost 10 s a screening (52 faces). A
        screening that finds none has judged every window, so an empty result is exact."""
        boxes, scores = self._proposals(img, region, tau[0])
        want = self.max_candidates * share
        chunk = max(128, 2 * want)
        kept, p_net, margins, found = [], [], [], 0
        for i in range(0, len(boxes), chunk):
            part, score = boxes[i : i + chunk], scores[i : i + chunk]
            m_r, reg_r = self._judge(self._rnet, img, part, 24)
            live = m_r > tau[1]
            part, score, reg_r = part[live], score[live], reg_r[live]
            if len(part):
                m_o, _ = self._judge(self._onet, img, self._refine(part, reg_r), 48)
                kept.append(part[m_o > tau[2]])
                p_net.append(score[m_o > tau[2]])
                margins.append(m_o[m_o > tau[2]])
                found += len(kept[-1])
            if found >= want:
                break
        if not found:
            return img.new_zeros(0, 4), img.new_zeros(0)
        order = torch.argsort(torch.cat(margins), descending=True)[:want]
        return torch.cat(kept)[order], torch.cat(p_net)[order]

    def _candidate_loss(
        self, img: torch.Tensor, region: torch.Tensor, candidates: tuple[torch.Tensor, torch.Tensor], tau
    ) -> tuple[torch.Tensor, bool]:
        """How far R-Net and O-Net are above their lowered thresholds on the candidates (boxes,
        P-Net margins) (+ P-Net's dense term when proposal_weight > 0), and whether one of them
        is above all three stages' own thresholds by SURE logits or more (the cascade keeps
        such a face: a candidate just over them may still be dropped by non-maximum suppression
        for a neighbour that a later stage rejects)."""
        boxes, p_net = candidates
        dense = self.proposal_weight * self.proposal_loss(img, region, tau[0]) if self.proposal_weight else 0.0
        if len(boxes) == 0:
            return img.sum() * 0.0 + dense, False
        m_r, reg_r = self._judge(self._rnet, img, boxes, 24)
        m_o, _ = self._judge(self._onet, img, self._refine(boxes, reg_r.detach()), 48)
        sure = [t + self.margin + SURE for t in tau]
        found = bool(((p_net > sure[0]) & (m_r.detach() > sure[1]) & (m_o.detach() > sure[2])).any())
        return (F.relu(m_r - tau[1]) + F.relu(m_o - tau[2])).sum() + dense, found

    def proposal_loss(self, img: torch.Tensor, region: torch.Tensor, tau: float) -> torch.Tensor:
        """Sum, over every P-Net window of the pyramid centred in `region`, of how far its face
        logit margin is above `tau`. img: (1, 3, H, W) in [0, 255]."""
        _, _, h, w = img.shape
        total = img.sum() * 0.0
        for s in self._scales(h, w):
            im = F.interpolate(img, size=(int(h * s + 1), int(w * s + 1)), mode="area")
            _, logits = self._pnet((im - 127.5) * 0.0078125)
            margin = logits[0, 1] - logits[0, 0]
            ys = ((torch.arange(margin.shape[0], device=img.device) * 2 + 6) / s).long().clamp(max=h - 1)
            xs = ((torch.arange(margin.shape[1], device=img.device) * 2 + 6) / s).long().clamp(max=w - 1)
            total = total + (F.relu(margin - tau) * (region[ys][:, xs] > 0)).sum()
        return total

    def _proposals(self, img: torch.Tensor, region: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 4) square boxes of P-Net windows centred in `region` with logit margin > tau,
        the most confident first, and their margins (N,)."""
        _, _, h, w = img.shape
        found, scores = [], []
        areas = _region_boxes(region)
        for s in self._scales(h, w):
            im = F.interpolate(img, size=(int(h * s + 1), int(w * s + 1)), mode="area")
            # P-Net is fully convolutional: a crop of the scaled image gives exactly the windows
            # inside it; even offsets keep them on P-Net's stride-2 grid.
            for r0, r1, c0, c1 in areas:
                y0, x0 = max(0, int(r0 * s) - 12) // 2 * 2, max(0, int(c0 * s) - 12) // 2 * 2
                crop = im[:, :, y0 : int(r1 * s) + 12, x0 : int(c1 * s) + 12]
                if min(crop.shape[2:]) < 12:
                    continue
                reg, logits = self._pnet((crop - 127.5) * 0.0078125)
                margin = logits[0, 1] - logits[0, 0]
                ys = ((torch.arange(margin.shape[0], device=img.device) * 2 + y0 + 6) / s).long().clamp(max=h - 1)
                xs = ((torch.arange(margin.shape[1], device=img.device) * 2 + x0 + 6) / s).long().clamp(max=w - 1)
                iy, ix = ((margin > tau) & (region[ys][:, xs] > 0)).nonzero().unbind(1)
                # window box as generateBoundingBox, then P-Net's regression; no NMS, since
                # once perturbed any of these windows may be the one the cascade keeps
                # (floored to whole pixels as generateBoundingBox does: a pixel's shift of a
                # small face's crop is enough for the real cascade to keep a face this misses)
                x1, y1 = torch.floor((2 * ix + x0 + 1) / s), torch.floor((2 * iy + y0 + 1) / s)
                x2, y2 = torch.floor((2 * ix + x0 + 12) / s), torch.floor((2 * iy + y0 + 12) / s)
                r = reg[0, :, iy, ix]
                bw, bh = x2 - x1, y2 - y1
                found.append(torch.stack([x1 + r[0] * bw, y1 + r[1] * bh, x2 + r[2] * bw, y2 + r[3] * bh], 1))
                scores.append(margin[iy, ix])
        if not found:
            return img.new_zeros(0, 4), img.new_zeros(0)
        score = torch.cat(scores)
        order = torch.argsort(score, descending=True)
        return _square(torch.cat(found))[order], score[order]

    @staticmethod
    def _refine(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
        """R-Net's box regression then rerec, as the cascade does before O-Net."""
        bw, bh = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1  # as bbreg
        return _square(boxes + reg * torch.stack([bw, bh, bw, bh], 1))

    def _judge(self, net, img, boxes, size):
        """Face logit margin and box regression of R-Net/O-Net on each box.

        Crops exactly as facenet-pytorch does (integer box clipped to the photo, then area
        resampling): adversarial patterns exploit any difference from the real pipeline.
        """
        _, _, h, w = img.shape
        crops = []
        for x1, y1, x2, y2 in boxes.detach().trunc().int().tolist():
            x1, y1, x2, y2 = max(x1, 1), max(y1, 1), min(x2, w), min(y2, h)
            if x2 <= x1 - 1 or y2 <= y1 - 1:  # empty crop: the cascade skips such a box
                x1, y1, x2, y2 = 1, 1, 2, 2
            crops.append((y1 - 1, y2, x1 - 1, x2))
        patches = area_crops(img, crops, size)
        # channels-last input: faster convolutions and pooling on the CPU (forward and
        # backward), the result equal to float rounding
        out = net(((patches - 127.5) * 0.0078125).contiguous(memory_format=torch.channels_last))
        return out[-1][:, 1] - out[-1][:, 0], out[0]


class _ScreenedLoss(AttackLoss):
    """MTCNNDetector.attack_loss: the candidates of the last screening, re-screened every
    `every` steps (and whenever their loss reaches zero)."""

    def __init__(self, detector: MTCNNDetector, every: int):
        super().__init__(detector.face_loss)
        self.detector, self.every = detector, every
        self.candidates: tuple[torch.Tensor, torch.Tensor] | None = None
        self.age, self.found = 0, False

    def __call__(self, x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        d = self.detector
        img, tau = x * 255.0, d._taus()
        fresh = self.candidates is None or self.age >= self.every
        if self.candidates is None or fresh:
            self.candidates, self.age = d._screen(img.detach(), region, tau, self.every), 0
        self.age += 1
        value, self.found = d._candidate_loss(img, region, self.candidates, tau)
        if not fresh and float(value.detach()) == 0.0:  # confirm on a fresh screening
            self.candidates, self.age = d._screen(img.detach(), region, tau, self.every), 1
            value, self.found = d._candidate_loss(img, region, self.candidates, tau)
        return value

    def surely_found(self) -> bool:
        return self.found


def area_crops(img: torch.Tensor, crops: list[tuple[int, int, int, int]], size: int) -> torch.Tensor:
    """Every crop (row0, row1, col0, col1) of a (1, C, H, W) image area-resampled to size x size,
    as F.interpolate(mode="area") (adaptive average pooling: output cell i averages input rows
    floor(i h / size) to ceil((i + 1) h / size)) makes each one, from one summed-area table:
    (N, C, size, size). Differentiable; the cost is one pass over the image plus four look-ups
    per output cell, whatever the number and size of the crops (one interpolate call per crop
    cost most of a step on a portrait with hundreds of candidates)."""
    c = img.shape[1]
    bounds = torch.tensor(crops, dtype=torch.int64)  # (N, 4)
    top, left = int(bounds[:, 0].min()), int(bounds[:, 2].min())  # only the part the crops cover
    sub = img[0, :, top : int(bounds[:, 1].max()), left : int(bounds[:, 3].max())]
    table = F.pad(sub.double().cumsum(1).cumsum(2), (1, 0, 1, 0))  # (C, h + 1, w + 1)
    bounds = bounds - torch.tensor([top, top, left, left])
    i = torch.arange(size, dtype=torch.int64)

    def edges(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = (hi - lo)[:, None]
        return lo[:, None] + i * n // size, lo[:, None] + -((-(i + 1) * n) // size)  # floor, ceil

    r0, r1 = edges(bounds[:, 0], bounds[:, 1])  # (N, size)
    c0, c1 = edges(bounds[:, 2], bounds[:, 3])
    flat, width = table.reshape(c, -1), table.shape[2]

    def corner(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return flat[:, (rows[:, :, None] * width + cols[:, None, :]).reshape(-1)]

    sums = corner(r1, c1) - corner(r0, c1) - corner(r1, c0) + corner(r0, c0)
    area = ((r1 - r0)[:, :, None] * (c1 - c0)[:, None, :]).reshape(-1)
    return (sums / area).reshape(c, len(crops), size, size).transpose(0, 1).contiguous().to(img.dtype)


def _logits_twin(net: torch.nn.Module, softmax: str) -> torch.nn.Module:
    """`net` sharing its parameters (so .to() moves both) but ending in logits, not softmax:
    the softmax saturates at 1.0 for confident faces and its gradient vanishes."""
    twin = copy.copy(net)  # shallow: same parameter dict, own child-module dict
    twin._modules = dict(net._modules)
    twin._modules[softmax] = torch.nn.Identity()
    return twin


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """MTCNN's rerec: grow each box to a square on its longer side, same centre."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    cx, cy = boxes[:, 0] + w / 2, boxes[:, 1] + h / 2
    return torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], 1)


def _region_boxes(region: torch.Tensor) -> list[tuple[int, int, int, int]]:
    """(row0, row1, col0, col1) bounding boxes of the connected parts of a 0/1 mask."""
    from scipy import ndimage

    labels, _ = ndimage.label(region.detach().cpu().numpy() > 0)
    return [(sl[0].start, sl[0].stop, sl[1].start, sl[1].stop) for sl in ndimage.find_objects(labels)]
