"""Trainers for FaceShield's own networks: `python -m faceshield.train <model> ...`."""
