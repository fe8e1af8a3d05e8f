"""FaceShield web app: layout and callbacks only; the work happens in src/faceshield."""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("YOLO_OFFLINE", "1")

try:  # ZeroGPU on Hugging Face Spaces; `spaces` must be imported before torch
    import spaces
except ImportError:  # anywhere else the decorator is a no-op
    spaces = None

import gradio as gr  # noqa: E402

from faceshield import models, settings  # noqa: E402
from faceshield.examples import example_photos  # noqa: E402
from faceshield.images import ImageError  # noqa: E402
from faceshield.weights import WeightsUnavailable  # noqa: E402
from faceshield.protections import METHODS  # noqa: E402
from faceshield.service import DETECTOR_COLUMNS, RECOGNISER_COLUMNS, protect_photo  # noqa: E402
from faceshield import lab  # noqa: E402

DESCRIPTION = """# FaceShield
Adds an imperceptible adversarial perturbation to the faces in a photo, so that face detectors
stop finding them (*Hide from detectors*) or face recognisers stop recognising them (*Hide
identity*), then shows what several detectors and recognisers see before and after. Blur,
pixelation and masking are there to compare with.
Everything runs on this machine; the download is a metadata-free PNG (a JPEG or WebP
re-encode would erase the protection)."""


def _gpu_seconds(image_path, method, eps, steps, *args, **kwargs) -> int:
    """ZeroGPU time to reserve: grows with the iterations asked for."""
    return int(30 + 0.5 * (steps or 80))


def _on_gpu(fn):
    return spaces.GPU(duration=_gpu_seconds)(fn) if spaces is not None else fn


@_on_gpu
def run(image_path, method, eps, steps, whole_image, slow_judges, reference_path, strength=None,
        mode="dodging", robust=False, target_paths=None, norm="linf", progress=gr.Progress(track_tqdm=True)):
    if not image_path:
        raise gr.Error("Upload a photo first (or click an example).")
    try:
        page = protect_photo(image_path, method=method, eps=eps, steps=steps, whole_image=whole_image,
                             slow_judges=slow_judges, reference=reference_path or None, strength=strength,
                             mode=mode, robust=robust, targets=target_paths or None, norm=norm)
    except ImageError as exc:
        raise gr.Error(str(exc)) from exc
    except WeightsUnavailable as exc:
        raise gr.Error(f"This protection's trained weights are not available here: {exc}") from exc
    return ((page.original, page.protected), page.perturbation, str(page.png_path), page.detections,
            page.detector_rows, page.recogniser_rows, page.summary)


def run_lab(image_path, method, eps, steps, progress=gr.Progress(track_tqdm=True)):
    if not image_path:
        raise gr.Error("Upload a photo first (or click an example).")
    from faceshield.images import load_image

    try:
        pixels = load_image(image_path).pixels
    except ImageError as exc:
        raise gr.Error(str(exc)) from exc
    trace = lab.trace_attack(pixels, method, eps, int(steps))
    last = len(trace.iterates) - 1
    return (trace, gr.Slider(minimum=0, maximum=last, value=last, step=1, interactive=True),
            *show_iteration(trace, last))


def show_iteration(trace, step):
    if trace is None:
        return None, None, None, ""
    step = int(min(step, len(trace.iterates) - 1))
    original, current = trace.iterates[0], trace.iterates[step]
    views = [(lab.amplified(original, current, f), f"perturbation x{f}") for f in (1, 10, 50)]
    loss = f"loss {trace.loss[step - 1]:.3f}" if step >= 1 else "clean photo"
    return current, views, lab.plot_trace(trace, step), f"**Iteration {step}** of {len(trace.iterates) - 1}: {loss}"


def run_sweep(image_path, method, steps, progress=gr.Progress(track_tqdm=True)):
    if not image_path:
        raise gr.Error("Upload a photo first (or click an example).")
    from faceshield.images import load_image

    rows = lab.budget_sweep(load_image(image_path).pixels, method, steps=int(steps))
    table = [[r["eps"], "yes" if r["success"] else "no", r["steps"], round(r["psnr"], 1), round(r["ssim"], 4),
              round(r["seconds"], 1)] for r in rows]
    return lab.plot_sweep(rows), table


def method_controls(key: str):
    """Show the knob the chosen protection has: the adversarial budget, or an obfuscation's
    own strength (with its default), or neither (DDM)."""
    cls = METHODS[key]
    label = getattr(cls, "strength_label", "")  # adversarial methods have no obfuscation strength
    return (gr.update(visible=getattr(cls, "uses_budget", True)),
            gr.update(visible=bool(label), label=label or "Obfuscation strength",
                      value=cls.default_strength if label else None))


def model_table() -> list[list]:
    return [[r["name"], r["kind"], "yes" if r["available"] else "no", r["detail"], r["licence"]]
            for r in models.status()]


def create_demo() -> gr.Blocks:
    with gr.Blocks(title="FaceShield", delete_cache=(600, 3600)) as demo:
        gr.Markdown(DESCRIPTION)
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(label="Photo", type="filepath", format="png", sources=["upload", "clipboard"])
                method = gr.Dropdown([(cls.title, key) for key, cls in METHODS.items()], value="detector-pgd",
                                     label="Protection")
                eps = gr.Slider(1, 16, value=8, step=1, label="Strength: max change per pixel, in grey levels of 255 "
                                "(RMS change over the faces with the L2 budget)")
                strength = gr.Number(value=None, visible=False, label="Obfuscation strength")
                with gr.Accordion("Advanced options", open=False):
                    steps = gr.Slider(10, 300, value=80, step=10, label="Maximum iterations")
                    whole_image = gr.Checkbox(label="Protect the whole image when no face is found")
                    slow_judges = gr.Checkbox(label="Also run slow detectors (dlib CNN, ~4 s)")
                    gr.Markdown("**Identity mask (TIP-IM)**")
                    mode = gr.Radio([("Dodging: just do not match", "dodging"),
                                     ("Targeted: look like a target identity", "targeted")],
                                    value="dodging", label="Identity goal")
                    targets = gr.File(label="Target identities (photos; default: built-in faces of example photos)",
                                      file_count="multiple", file_types=["image"], type="filepath")
                    robust = gr.Checkbox(label="Survive JPEG re-compression and resizing (slower)")
                    norm = gr.Radio([("Max change per pixel (L-inf)", "linf"),
                                     ("Average (RMS) change over the faces (L2)", "l2")],
                                    value="linf", label="What the strength bounds")
                    reference = gr.Image(label="Optional: another photo of the same person", type="filepath",
                                         format="png")
                button = gr.Button("Protect", variant="primary")
                gr.Examples([[str(p)] for p in example_photos().values()], inputs=[image])
            with gr.Column(scale=2):
                slider = gr.ImageSlider(label="Original | protected", format="png", type="numpy")
                summary = gr.Markdown()
                with gr.Row():
                    perturbation = gr.Image(label="Perturbation (amplified)", format="png", interactive=False)
                    download = gr.File(label="Download protected PNG (no EXIF/GPS)")
        with gr.Tab("Detectors"):
            detector_table = gr.Dataframe(headers=DETECTOR_COLUMNS, label="What each face detector finds",
                                          interactive=False, wrap=True)
            gallery = gr.Gallery(label="Boxes before (green) and after (red)", columns=4, format="png", height="auto")
        with gr.Tab("Recognisers"):
            recogniser_table = gr.Dataframe(headers=RECOGNISER_COLUMNS, interactive=False, wrap=True,
                                            label="Identity match: original face vs protected face (and a reference photo)")
        with gr.Tab("Attack lab"):
            gr.Markdown("Step through an attack one iteration at a time: how the models' confidence falls "
                        "while the perturbation grows, and what the budget buys.")
            with gr.Row():
                with gr.Column(scale=1):
                    lab_image = gr.Image(label="Photo", type="filepath", format="png")
                    lab_method = gr.Radio([("Hide from detectors", "detector-pgd"), ("Hide identity", "tip-im")],
                                          value="detector-pgd", label="Attack")
                    lab_eps = gr.Slider(1, 16, value=8, step=1, label="Budget (grey levels of 255)")
                    lab_steps = gr.Slider(5, 100, value=40, step=5, label="Iterations")
                    lab_button = gr.Button("Run the attack", variant="primary")
                    sweep_button = gr.Button("Sweep the budget (2-16)")
                    gr.Examples([[str(p)] for p in example_photos().values()], inputs=[lab_image])
                with gr.Column(scale=2):
                    lab_step = gr.Slider(0, 1, value=0, step=1, label="Iteration", interactive=True)
                    lab_caption = gr.Markdown()
                    with gr.Row():
                        lab_view = gr.Image(label="Photo at this iteration", format="png", interactive=False)
                        lab_amplified = gr.Gallery(label="Perturbation, amplified", columns=3, format="png",
                                                   height="auto")
                    lab_plot = gr.Plot(label="Loss and model scores per iteration")
                    sweep_plot = gr.Plot(label="Budget sweep")
                    sweep_table = gr.Dataframe(headers=["budget", "hidden?", "steps", "PSNR dB", "SSIM", "seconds"],
                                               interactive=False)
            lab_trace = gr.State(None)
            lab_button.click(run_lab, [lab_image, lab_method, lab_eps, lab_steps],
                             [lab_trace, lab_step, lab_view, lab_amplified, lab_plot, lab_caption],
                             api_name="lab", concurrency_limit=settings.CONCURRENCY_LIMIT)
            lab_step.release(show_iteration, [lab_trace, lab_step], [lab_view, lab_amplified, lab_plot, lab_caption],
                             api_name=False)
            sweep_button.click(run_sweep, [lab_image, lab_method, lab_steps], [sweep_plot, sweep_table],
                               api_name="sweep", concurrency_limit=settings.CONCURRENCY_LIMIT)
        with gr.Tab("Models"):
            gr.Dataframe(value=model_table, headers=["model", "kind", "available", "source", "licence"],
                         interactive=False, wrap=True)
        method.change(method_controls, method, [eps, strength], api_name=False)
        button.click(run, [image, method, eps, steps, whole_image, slow_judges, reference, strength, mode, robust,
                           targets, norm],
                     [slider, perturbation, download, gallery, detector_table, recogniser_table, summary],
                     api_name="protect", concurrency_limit=settings.CONCURRENCY_LIMIT)
    return demo


demo = create_demo()

if __name__ == "__main__":
    demo.queue(max_size=settings.MAX_QUEUE_SIZE).launch(
        server_name=os.getenv("GRADIO_SERVER_NAME", "127.0.0.1"), show_error=True)
