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
from torchvision.ops import batched_nms, nms

from faceshield import settings
from faceshield.models.base import Detections, Detector


class MTCNNDetector(Detector):
    name = "MTCNN"
    differentiable = True

    def __init__(
        self, min_face_size: int = 20, margin: float = 1.0, max_candidates: int = 48, proposal_weight: float = 0.0
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
        # max_candidates: the most a step pushes per separate face region (face_loss).
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
        tau = [float(np.log(t / (1 - t))) - self.margin for t in self.thresholds]
        with torch.no_grad():
            boxes = self._proposals(img.detach(), region, tau[0])
            if len(boxes):  # keep the candidates that R-Net and O-Net both still accept
                m_r, reg_r = self._judge(self._rnet, img, boxes, 24)
                boxes, reg_r, m_r = boxes[m_r > tau[1]], reg_r[m_r > tau[1]], m_r[m_r > tau[1]]
                keep = nms(boxes, m_r, 0.7)  # as the cascade does before O-Net
                boxes, reg_r = boxes[keep], reg_r[keep]
                if len(boxes):
                    m_o, _ = self._judge(self._onet, img, self._refine(boxes, reg_r), 48)
                    alive = (m_o > tau[2]).nonzero()[:, 0]
                    # The most confident few per step and face (the rest are taken in later
                    # steps): every face moves at every step, however many there are.
                    cap = self.max_candidates * max(1, _parts(region))
                    alive = alive[torch.argsort(m_o[alive], descending=True)[:cap]]
                    boxes = boxes[alive]
        dense = self.proposal_weight * self.proposal_loss(img, region, tau[0]) if self.proposal_weight else 0.0
        if len(boxes) == 0:
            return img.sum() * 0.0 + dense
        m_r, reg_r = self._judge(self._rnet, img, boxes, 24)
        m_o, _ = self._judge(self._onet, img, self._refine(boxes, reg_r.detach()), 48)
        return (F.relu(m_r - tau[1]) + F.relu(m_o - tau[2])).sum() + dense

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

    def _proposals(self, img: torch.Tensor, region: torch.Tensor, tau: float) -> torch.Tensor:
        """(N, 4) square boxes of P-Net windows centred in `region` with logit margin > tau,
        thinned as the cascade thins them (non-maximum suppression at IoU 0.5 within a scale,
        then 0.7 over all): the loss is recomputed every step, so a window suppressed now is
        judged as soon as the one that suppressed it is pushed out."""
        _, _, h, w = img.shape
        found = []
        rows, cols = region.nonzero().unbind(1)
        if len(rows) == 0:
            return img.new_zeros(0, 4)
        # one crop around every face: a P-Net call per face and scale cost more than the pixels
        areas = [(int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1)]
        for level, s in enumerate(self._scales(h, w)):
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
                # window box as generateBoundingBox (floored, as it does), P-Net's regression after the NMS
                x1, y1 = ((2 * ix + x0 + 1) / s).floor(), ((2 * iy + y0 + 1) / s).floor()
                x2, y2 = ((2 * ix + x0 + 12) / s).floor(), ((2 * iy + y0 + 12) / s).floor()
                level_of = torch.full_like(x1, level)
                found.append(torch.stack([x1, y1, x2, y2, margin[iy, ix], level_of, *reg[0, :, iy, ix]], 1))
        if not found:
            return img.new_zeros(0, 4)
        found = torch.cat(found)
        found = found[batched_nms(found[:, :4], found[:, 4], found[:, 5].long(), 0.5)]
        found = found[nms(found[:, :4], found[:, 4], 0.7)]
        x1, y1, x2, y2 = found[:, :4].unbind(1)
        r, bw, bh = found[:, 6:10].T, x2 - x1, y2 - y1
        return _square(torch.stack([x1 + r[0] * bw, y1 + r[1] * bh, x2 + r[2] * bw, y2 + r[3] * bh], 1))

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
        out = net((area_crops(img, crops, size) - 127.5) * 0.0078125)
        return out[-1][:, 1] - out[-1][:, 0], out[0]


def area_crops(img: torch.Tensor, crops: list[tuple[int, int, int, int]], size: int) -> torch.Tensor:
    """(N, C, size, size): each (row0, row1, col0, col1) crop of img (1, C, H, W) resampled as
    F.interpolate(mode="area") does (adaptive average pooling: output cell i averages input
    rows floor(i * h / size) to ceil((i + 1) * h / size)), all crops at once from one integral
    image (float64, so the sums stay exact to well under a grey level). One gather instead of
    a slice per crop: a slice's backward pass allocates a gradient the size of the photo, so
    the per-crop cost grew with the number of candidates (and of faces)."""
    dev = img.device
    box = torch.tensor(crops, dtype=torch.long, device=dev)  # (N, 4)
    top, left = int(box[:, 0].min()), int(box[:, 2].min())
    img = img[:, :, top : int(box[:, 1].max()), left : int(box[:, 3].max())]  # the part the crops cover
    box = box - torch.tensor([top, top, left, left], device=dev)
    _, c, h, w = img.shape
    r0, c0 = box[:, :1], box[:, 2:3]
    hh, ww = box[:, 1:2] - r0, box[:, 3:4] - c0
    i = torch.arange(size, device=dev)[None]
    ys0, ys1 = r0 + (i * hh) // size, r0 + -((-(i + 1) * hh) // size)  # (N, size) row bounds
    xs0, xs1 = c0 + (i * ww) // size, c0 + -((-(i + 1) * ww) // size)
    integral = F.pad(img[0].double().cumsum(1).cumsum(2), (1, 0, 1, 0)).reshape(c, -1)  # (C, (H+1)(W+1))

    def corner(ys, xs):  # integral at (ys[n, i], xs[n, j]) -> (C, N, size, size)
        index = (ys[:, :, None] * (w + 1) + xs[:, None, :]).reshape(1, -1).expand(c, -1)
        return integral.gather(1, index).reshape(c, len(crops), size, size)

    sums = corner(ys1, xs1) - corner(ys0, xs1) - corner(ys1, xs0) + corner(ys0, xs0)
    area = ((ys1 - ys0)[:, :, None] * (xs1 - xs0)[:, None, :]).to(sums.dtype)
    return (sums / area).to(img.dtype).permute(1, 0, 2, 3)


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


def _parts(region: torch.Tensor) -> int:
    """How many separate parts (faces, or groups of overlapping faces) a 0/1 mask has."""
    from scipy import ndimage

    return int(ndimage.label(region.detach().cpu().numpy() > 0)[1])
