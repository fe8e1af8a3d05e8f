"""FaceShield: protect photos from face detectors and face recognisers.

Layout (images in -> models -> protections -> evaluation -> UI/CLI out):
  images.py        load/validate any user photo, save clean PNGs
  models/          detectors and recognisers behind one registry
  protections/     the protection methods (each: photo + faces -> protected photo)
  evaluation.py    the one routine that judges a protection (app, CLI, bench, tests)
  cli.py, bench/   command line; app.py (repo top level) the Gradio UI
"""

__version__ = "0.1.0"
