"""What an identity mask optimises for one face: move its embeddings away from the person.

An attacker links a new photo to a person by comparing it with photos of that person they
already hold. So the objective is stated against the person, not against one photo: each
attacked recogniser holds the person's clean embeddings (this face, a few views of it, and the
embeddings of the person's other photos when the user gives them) and the protected face must
end `margin` beyond the recogniser's threshold from the region those embeddings span:

  convex: from the nearest point of their convex hull (OPOM, Zhong and Deng, "OPOM: Customized
          Invisible Cloak towards Face Privacy Protection", TPAMI 2022): every photo of the
          person and every blend of them is left behind, so unseen photos of the person (which
          lie near that hull) are left behind too;
  centre: from their mean (OPOM's class centre; cheaper, weaker).

With only the face itself the hull is that one point: the one-photo objective of TIP-IM.
Targeted masks (TIP-IM, Yang et al., ICCV 2021) also pull the face towards the best of an
active set of target identities (a soft minimum over the set), which grows by greedy insertion,
a step the attack loop takes explicitly (`insert`).

    person = Person(recognisers, anchors, photos=2)   # anchors[j]: (K, D) clean embeddings
    objective = IdentityObjective(person, margin=1.0)
    loss = objective.loss(embeddings)                 # one (D,) embedding per recogniser
    objective.insert(objective.target_losses(embeddings))  # targeted: grow the active set
    objective.fooled(embeddings)                      # beyond every threshold from every photo
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

HULLS = ("convex", "centre")


def project_simplex(w: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of a (K,) vector onto the probability simplex (Duchi et al. 2008)."""
    u, _ = torch.sort(w, descending=True)
    cumulative = torch.cumsum(u, 0) - 1
    k = torch.arange(1, len(w) + 1, dtype=w.dtype)
    rho = int(torch.nonzero(u - cumulative / k > 0).max())
    return (w - cumulative[rho] / (rho + 1)).clamp_min(0)


def hull_point(e: torch.Tensor, anchors: torch.Tensor, hull: str = "convex", iters: int = 40) -> torch.Tensor:
    """The point of the region `anchors` ((K, D)) span that is nearest to embedding `e` ((D,)):
    the nearest point of their convex hull (projected gradient on the weights), or their mean
    for hull="centre". Computed without gradient: the distance to a fixed nearest point has the
    same gradient in `e` as the distance to the hull (the envelope theorem)."""
    with torch.no_grad():
        if len(anchors) == 1:
            return anchors[0]
        if hull == "centre":
            return anchors.mean(0)
        gram, b = anchors @ anchors.T, anchors @ e.detach()
        step = 1.0 / (2 * float(torch.linalg.eigvalsh(gram)[-1]) + 1e-12)
        w = torch.full((len(anchors),), 1.0 / len(anchors), dtype=anchors.dtype)
        for _ in range(iters):
            w = project_simplex(w - step * 2 * (gram @ w - b))
        return w @ anchors


@dataclass
class Person:
    """The person behind one face, as each attacked recogniser sees them: `anchors[j]` is a
    (K, D) tensor of clean embeddings at recogniser j; its first `photos` rows come from real
    photos (this face first, then the person's other photos), the rest from views of this
    face made to stand in for photos the user did not give."""

    recognisers: list
    anchors: list[torch.Tensor]
    photos: int = 1

    def real(self, j: int) -> torch.Tensor:
        return self.anchors[j][: self.photos]


@dataclass
class IdentityObjective:
    """The loss of one face's identity mask, in named parts (see the module's docstring).

    person: whose embeddings to leave; margin: how far beyond each threshold (a fraction of
    it); hull: "convex" or "centre". targets: [candidate][recogniser] embeddings of target
    identities (targeted mode; empty for dodging), target_margin how far inside each threshold
    a target must match; chosen: the active target set (indices into targets)."""

    person: Person
    margin: float
    hull: str = "convex"
    targets: list[list[torch.Tensor]] = field(default_factory=list)
    target_margin: float = 0.25
    chosen: list[int] = field(default_factory=list)

    def dodge(self, embeddings: list) -> torch.Tensor:
        """Sum over recognisers of the hinge on the distance from the person's region
        (embeddings: one (D,) tensor per recogniser, None for one left out of this step)."""
        return sum(
            rec.dodge_loss(e, hull_point(e, anchors, self.hull), self.margin)
            for rec, anchors, e in zip(self.person.recognisers, self.person.anchors, embeddings)
            if e is not None
        )

    def target_losses(self, embeddings: list) -> torch.Tensor:
        """(C,) how far the face is from matching each candidate target at every recogniser."""
        return torch.stack(
            [
                sum(
                    rec.match_loss(e, t[j], self.target_margin)
                    for j, (rec, e) in enumerate(zip(self.person.recognisers, embeddings))
                    if e is not None
                )
                for t in self.targets
            ]
        )

    def insert(self, target_losses: torch.Tensor) -> None:
        """TIP-IM's greedy insertion of a target identity into the active set (a loop step)."""
        greedy_insert(self.chosen, target_losses.detach())

    def loss(self, embeddings: list, target_losses: torch.Tensor | None = None) -> torch.Tensor:
        """The identity loss to descend (0 once every part is met); `target_losses` as
        target_losses(embeddings) gave them, when the loop already has them."""
        loss = self.dodge(embeddings)
        if self.targets and self.chosen:
            losses = self.target_losses(embeddings) if target_losses is None else target_losses
            loss = loss + softmin(losses[self.chosen])
        return loss

    def fooled(self, embeddings: list, anchors: list[torch.Tensor] | None = None) -> bool:
        """On embeddings of the 8-bit photo: no recogniser matches the face to any photo of the
        person (anchors[j]: (K, D) at recogniser j; default the real photos among the
        person's anchors), and (targeted) some chosen target matches at every recogniser."""
        recs = self.person.recognisers
        for j, (rec, e) in enumerate(zip(recs, embeddings)):
            real = self.person.real(j) if anchors is None else anchors[j]
            if any(rec.is_match(float(rec.score_tensor(e, a))) for a in real):
                return False
        if self.targets and self.chosen:
            return any(
                all(
                    rec.is_match(float(rec.score_tensor(e, self.targets[c][j])))
                    for j, (rec, e) in enumerate(zip(recs, embeddings))
                )
                for c in self.chosen
            )
        return True


def softmin(losses: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Soft minimum: the set objective is met by resembling any one identity of the set."""
    return -temperature * torch.logsumexp(-losses / temperature, dim=0)


def greedy_insert(chosen: list[int], losses: torch.Tensor, min_gain: float = 0.05) -> None:
    """TIP-IM's greedy insertion: add the candidate whose insertion lowers the set objective
    most, if it lowers it by at least `min_gain` of its value (the first pick is the nearest)."""
    if not chosen:
        chosen.append(int(torch.argmin(losses)))
        return
    if len(chosen) == len(losses):
        return
    current = float(softmin(losses[chosen]))
    gain, best = max((current - float(softmin(losses[chosen + [c]])), c) for c in range(len(losses)) if c not in chosen)
    if gain > min_gain * max(current, 1e-6):
        chosen.append(best)
