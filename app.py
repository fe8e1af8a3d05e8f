"""FaceShield web app: layout and wiring only. How the options are shown and checked, and the
/protect API's schema: faceshield/page.py; slots, deadlines, cancellation, GPU time:
faceshield/serving.py; the work: faceshield/service.py, compare.py, lab.py."""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("YOLO_OFFLINE", "1")

import gradio as gr  # noqa: E402

from faceshield import (  # noqa: E402
    compare,
    lab,
    serving,  # noqa: E402  (first: on ZeroGPU it imports `spaces` before torch)
    settings,
)
from faceshield.examples import examples  # noqa: E402
from faceshield.page import (  # noqa: E402
    LAB,
    CompareRequest,
    Control,
    LabRequest,
    ProtectRequest,
    option_arguments,
    shown,
)
from faceshield.protections import REGISTRY  # noqa: E402
from faceshield.protections.spec import NAMES, PHOTOS, SUBSET, Param  # noqa: E402
from faceshield.service import (  # noqa: E402
    DETECTOR_COLUMNS,
    MODEL_COLUMNS,
    RECOGNISER_COLUMNS,
    model_rows,
    protect_photo,
)
from faceshield.settings import InputError, Knob  # noqa: E402
from faceshield.weights import WeightsUnavailable  # noqa: E402

DESCRIPTION = """# FaceShield
Adds an imperceptible adversarial perturbation to the faces in a photo, so that face detectors
stop finding them (*Hide from detectors*) or face recognisers stop recognising them (*Hide
identity*), then shows what several detectors and recognisers see before and after. Blur,
pixelation and masking are there to compare with (**Compare** runs several on one photo).
Everything runs on this machine; the download is a metadata-free PNG (a JPEG or WebP
re-encode would erase the protection)."""

VERDICT_HELP = (
    "Green: every never-attacked detector, or every never-attacked recogniser, is fooled. "
    "Amber: some models are fooled, but not so. Red: none is. Attacked (white-box) models are the "
    "ones the protection was aimed at; never-attacked judges stand for a stranger's model."
)


INITIAL_METHOD = "detector-pgd"


def checked(parse, *args):
    """A request's typed payload from its raw inputs; a refused input is the user's message."""
    try:
        return parse(*args)
    except InputError as exc:
        raise gr.Error(str(exc)) from None


def protect_seconds(request: ProtectRequest) -> int:
    """GPU time for a protection: grows with its iterations (the page's or its default)."""
    steps = REGISTRY[request.method].param("steps")
    return serving.seconds_for_steps(request.steps, steps.default if steps else 0)


@serving.heavy(seconds=protect_seconds)
def run(request: ProtectRequest) -> tuple:
    """The Protect page's work: the photo protected, judged, laid out for the outputs."""
    try:
        page = protect_photo(**request.kwargs())
    except InputError as exc:  # unusable photos (ImageError), too many faces: the message is for the user
        raise gr.Error(str(exc)) from None
    except WeightsUnavailable as exc:
        raise gr.Error(f"This protection's trained weights are not available here: {exc}") from None
    return (
        (page.crop_before, page.crop_after),
        page.perturbation,
        str(page.png_path),
        page.detections,
        page.detector_rows,
        page.recogniser_table,
        page.summary,
        page.verdict.html(),
    )


@serving.heavy(seconds=lambda payload: len(payload[0].methods) * serving.seconds_for_steps(None, 10))
def run_compare(payload: tuple[CompareRequest, object]) -> tuple:
    """The Compare page's work (`payload`: the checked request and a progress callback, None
    on ZeroGPU)."""
    inputs, on_progress = payload
    try:
        result = compare.compare(inputs.source, inputs.methods, on_progress=on_progress)
    except InputError as exc:
        raise gr.Error(str(exc)) from None
    notes = "\n".join(f"- {n}" for n in result.notices)
    return result.table(), result.plot(), result.crops(), notes


def _lab_photo(request: LabRequest):
    from faceshield.images import load_image

    try:
        return load_image(request.source).pixels
    except InputError as exc:
        raise gr.Error(str(exc)) from None


@serving.heavy(seconds=lambda request: serving.seconds_for_steps(request.steps, 0))
def run_lab(request: LabRequest) -> tuple:
    trace = lab.trace_attack(_lab_photo(request), request.method, request.eps, request.steps)
    last = len(trace.iterates) - 1
    return (
        trace,
        gr.Slider(minimum=0, maximum=last, value=last, step=1, interactive=True),
        *show_iteration(trace, last),
    )


def show_iteration(trace, step):
    if trace is None:
        return None, None, None, ""
    step = checked(Knob("The iteration", 0, len(trace.iterates) - 1, integer=True).check, step)
    original, current = trace.iterates[0], trace.iterates[step]
    views = [(lab.amplified(original, current, f), f"perturbation x{f}") for f in (1, 10, 50)]
    loss = f"loss {trace.loss[step - 1]:.3f}" if step >= 1 else "clean photo"
    return current, views, lab.plot_trace(trace, step), f"**Iteration {step}** of {len(trace.iterates) - 1}: {loss}"


@serving.heavy(seconds=lambda request: 5 * serving.seconds_for_steps(request.steps, 0))  # one attack per budget
def run_sweep(request: LabRequest) -> tuple:
    rows = lab.budget_sweep(_lab_photo(request), request.method, steps=request.steps)
    table = [
        [
            r["eps"],
            "yes" if r["success"] else "no",
            r["steps"],
            round(r["psnr"], 1),
            round(r["ssim"], 4),
            round(r["seconds"], 1),
        ]
        for r in rows
    ]
    return lab.plot_sweep(rows), table


# The events' handlers: each checks its raw inputs into a typed request, then serves the work
# (serving.Heavy.serve); tqdm progress of the attack loops reaches the page.


async def protect(progress=gr.Progress(track_tqdm=True), **values):
    """/protect: its inputs by name (page.protect_api())."""
    async for out in run.serve(checked(ProtectRequest.parse, values), idle=gr.skip()):
        yield out


async def compare_protections(image_path, methods, progress=gr.Progress()):
    def step(i, n, method):
        progress((i, n), desc=f"{method} ({i + 1} of {n})" if i < n else "done", unit="protections")

    request = checked(CompareRequest.parse, image_path, methods)
    # on ZeroGPU the work runs in another process, where the page's progress cannot follow
    async for out in run_compare.serve((request, None if serving.ON_ZEROGPU else step), idle=gr.skip()):
        yield out


async def lab_attack(image_path, method, eps, steps, progress=gr.Progress(track_tqdm=True)):
    async for out in run_lab.serve(checked(LabRequest.parse, image_path, method, steps, eps), idle=gr.skip()):
        yield out


async def lab_sweep(image_path, method, steps, progress=gr.Progress(track_tqdm=True)):
    request = checked(lambda: LabRequest.parse(image_path, method, steps, sweep=True))
    async for out in run_sweep.serve(request, idle=gr.skip()):
        yield out


def control_props(param: Param, control: Control) -> dict:
    """A control's properties for `param` as `control` shows it: label, value, range, choices."""
    props = {"label": control.label, "value": param.default}
    if param.numeric:
        knob = control.knob(param)
        props.update(minimum=knob.low, maximum=knob.high)
    elif param.kind in (NAMES, SUBSET):
        props.update(choices=list(param.choices), value=list(param.default))
    elif param.choices:
        labels = control.choice_labels or param.choices
        props["choices"] = list(zip(labels, param.choices))
    return props


def method_controls(key: str) -> list:
    """Every option control as protection `key` shows it (page.shown), the others hidden and
    emptied; in option_arguments() order."""
    own = shown(key)
    return [
        gr.update(visible=True, **control_props(*own[name])) if name in own else gr.update(visible=False, value=None)
        for name in option_arguments()
    ]


def presented(name: str) -> tuple[Param, Control]:
    """Option argument `name` as the initial protection shows it, else as the first protection
    that does (its control starts hidden then)."""
    return shown(INITIAL_METHOD).get(name) or shown(option_arguments()[name].used_by[0])[name]


def option_control(name: str) -> gr.components.Component:
    """The page's control of one /protect option argument (presented(); hidden unless the
    initial protection shows it)."""
    param, control = presented(name)
    props = {**control_props(param, control), "visible": name in shown(INITIAL_METHOD)}
    if param.kind is bool:
        return gr.Checkbox(**props)
    if param.kind is PHOTOS:
        return gr.File(
            label=props["label"],
            visible=props["visible"],
            file_count="multiple",
            file_types=["image"],
            type="filepath",
        )
    if param.kind in (NAMES, SUBSET):
        return gr.CheckboxGroup(**props)
    if param.choices:
        return gr.Radio(**props)
    if param.numeric and all(abs(props[k]) < float("inf") for k in ("minimum", "maximum")):
        return gr.Slider(step=control.step or 1, **props)
    if param.numeric:
        return gr.Number(**props)
    return gr.Textbox(**props)


def heavy_event(button: gr.Button, handler, outputs: list, api_name: str, inputs=None, inputs_kwargs=None) -> None:
    """Wire a button to heavy work: one concurrency group of settings.CONCURRENCY_LIMIT slots
    (serving holds the same number) and raw inputs that the handler checks (preprocess=False)."""
    button.click(
        handler,
        inputs,
        outputs,
        inputs_kwargs=inputs_kwargs,
        api_name=api_name,
        concurrency_limit=settings.CONCURRENCY_LIMIT,
        concurrency_id="heavy",
        preprocess=False,
    )


def example_inputs(component: gr.Image) -> gr.Examples:
    """The labelled example photos (portrait, two people, group) for one page's photo input."""
    shipped = examples()
    return gr.Examples(
        [[str(e.path)] for e in shipped],
        inputs=[component],
        example_labels=[e.label for e in shipped],
        label="Examples (click one)",
    )


def protect_page() -> None:
    arguments = option_arguments()
    groups: dict[str, list[str]] = {}
    for name in arguments:
        groups.setdefault(presented(name)[1].group, []).append(name)
    controls = {}
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            image = gr.Image(label="Photo", type="filepath", format="png", sources=["upload", "clipboard"])
            method = gr.Dropdown(
                [(cls.title, key) for key, cls in REGISTRY.items()], value=INITIAL_METHOD, label="Protection"
            )
            for name in groups.pop("main", []):
                controls[name] = option_control(name)
            with gr.Accordion("Advanced options", open=False):
                for name in groups.pop("advanced", []):
                    controls[name] = option_control(name)
                slow_judges = gr.Checkbox(label="Also run slow detectors (dlib CNN, ~4 s)")
                for heading, names in groups.items():  # one protection's own options, under its heading
                    gr.Markdown(f"**{heading}**")
                    for name in names:
                        controls[name] = option_control(name)
                reference = gr.Image(label="Optional: another photo of the same person", type="filepath", format="png")
            button = gr.Button("Protect", variant="primary")
            example_inputs(image)
        with gr.Column(scale=2, min_width=300):
            verdict = gr.HTML(elem_id="verdict")
            with gr.Row():
                slider = gr.ImageSlider(
                    label="The faces: original | protected", format="png", type="numpy", min_width=240, height=360
                )
                perturbation = gr.Image(
                    label="What changed (amplified)", format="png", interactive=False, min_width=240, height=360
                )
            download = gr.File(label="Download the protected photo (PNG, no EXIF/GPS)", elem_id="download")
            detector_table = gr.Dataframe(
                headers=DETECTOR_COLUMNS,
                label="Face detectors: faces found before and after",
                interactive=False,
                wrap=True,
                column_widths=["32%", "24%", "14%", "14%", "16%"],
                max_height=900,
                elem_id="detector-table",
            )
            recogniser_table = gr.Dataframe(
                headers=RECOGNISER_COLUMNS,
                label="Face recognisers: is the protected face still the same person?",
                interactive=False,
                wrap=True,
                column_widths=["28%", "22%", "8%", "14%", "12%", "16%"],
                max_height=900,
                elem_id="recogniser-table",
            )
            with gr.Accordion("Details: settings, image quality, notices", open=False):
                summary = gr.Markdown(elem_id="summary")
            with gr.Accordion("What each detector saw (click a picture to open it)", open=False):
                gallery = gr.Gallery(
                    label="Boxes before (green) and after (red)", columns=4, format="png", height="auto", preview=False
                )
            gr.Markdown(VERDICT_HELP, elem_classes="fs-help")
    options = {name: controls[name] for name in arguments}  # the API's order, not the layout's
    method.change(method_controls, method, list(options.values()), api_name=False)
    inputs = {
        "image_path": image,
        "method": method,
        **options,
        "slow_judges": slow_judges,
        "reference_path": reference,
    }
    heavy_event(
        button,
        protect,
        [slider, perturbation, download, gallery, detector_table, recogniser_table, summary, verdict],
        "protect",
        inputs_kwargs=inputs,
    )


def compare_page() -> None:
    gr.Markdown(
        "One photo, several protections, one after another: how much each hides from the detectors "
        "and recognisers, against how visible it is (PSNR: higher is less visible)."
    )
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            image = gr.Image(label="Photo", type="filepath", format="png", sources=["upload", "clipboard"])
            methods = gr.CheckboxGroup(
                [(f"{cls.title} ({key})", key) for key, cls in REGISTRY.items()],
                value=list(compare.FAST_METHODS),
                label="Protections (the ticked ones are fast; the others take up to a minute each)",
            )
            button = gr.Button("Compare", variant="primary")
            example_inputs(image)
        with gr.Column(scale=2, min_width=300):
            table = gr.Dataframe(
                headers=compare.COLUMNS,
                label="Each protection, judged",
                interactive=False,
                wrap=True,
                elem_id="compare-table",
            )
            plot = gr.Plot(label="Privacy against visibility", elem_id="compare-plot")
            crops = gr.Gallery(
                label="The faces after each protection",
                columns=6,
                format="png",
                height="auto",
                preview=False,
                elem_id="compare-crops",
            )
            notes = gr.Markdown()
    heavy_event(button, compare_protections, [table, plot, crops, notes], "compare", [image, methods])


def lab_slider(name: str, value: float, **options) -> gr.Slider:
    """A slider of the lab's (page.LAB): its range is the one the lab's handler accepts."""
    param, control = LAB[name]
    knob = control.knob(param)
    return gr.Slider(knob.low, knob.high, value=value, step=1, label=control.label, **options)


def lab_page() -> None:
    gr.Markdown(
        "Step through an attack one iteration at a time: how the models' confidence falls "
        "while the perturbation grows, and what the budget buys."
    )
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            lab_image = gr.Image(label="Photo", type="filepath", format="png")
            lab_method = gr.Radio(
                [(REGISTRY[key].title, key) for key in lab.lab_methods()], value="detector-pgd", label="Attack"
            )
            lab_eps = lab_slider("eps", 8)
            lab_steps = lab_slider("steps", 40, elem_id="lab-steps")
            lab_button = gr.Button("Run the attack", variant="primary")
            sweep_button = gr.Button("Sweep the budget (2-16)")
            example_inputs(lab_image)
        with gr.Column(scale=2, min_width=300):
            lab_step = gr.Slider(0, 1, value=0, step=1, label="Iteration", interactive=True)
            lab_caption = gr.Markdown()
            with gr.Row():
                lab_view = gr.Image(label="Photo at this iteration", format="png", interactive=False, min_width=240)
                lab_amplified = gr.Gallery(
                    label="Perturbation, amplified", columns=3, format="png", height="auto", min_width=240
                )
            lab_plot = gr.Plot(label="Loss and model scores per iteration")
            sweep_plot = gr.Plot(label="Budget sweep")
            sweep_table = gr.Dataframe(
                headers=["budget", "hidden?", "steps", "PSNR dB", "SSIM", "seconds"], interactive=False
            )
    lab_trace = gr.State(None, time_to_live=settings.STATE_TTL)  # thumbnails, dropped when idle
    heavy_event(
        lab_button,
        lab_attack,
        [lab_trace, lab_step, lab_view, lab_amplified, lab_plot, lab_caption],
        "lab",
        [lab_image, lab_method, lab_eps, lab_steps],
    )
    lab_step.release(
        show_iteration,
        [lab_trace, lab_step],
        [lab_view, lab_amplified, lab_plot, lab_caption],
        api_name=False,
        preprocess=False,
    )
    heavy_event(sweep_button, lab_sweep, [sweep_plot, sweep_table], "sweep", [lab_image, lab_method, lab_steps])


def models_page() -> None:
    gr.Markdown(
        "Every model FaceShield judges with. White-box models are the ones a protection can attack "
        "(it sees their gradients); black-box judges are never attacked and stand for a stranger's model."
    )
    gr.Dataframe(value=model_rows, headers=MODEL_COLUMNS, interactive=False, wrap=True, label="Models")


def create_demo() -> gr.Blocks:
    with gr.Blocks(title="FaceShield", delete_cache=(600, 3600)) as demo:
        gr.Markdown(DESCRIPTION)
        with gr.Tabs():
            with gr.Tab("Protect", id="protect", elem_id="protect-page"):
                protect_page()
            with gr.Tab("Compare", id="compare", elem_id="compare-page"):
                compare_page()
            with gr.Tab("Attack lab", id="lab", elem_id="lab-page"):
                lab_page()
            with gr.Tab("Models", id="models", elem_id="models-page"):
                models_page()
    return demo


demo = create_demo()


def launch(**options):
    """Serve the page as `python app.py` does; tests add prevent_thread_lock=True. show_error is
    off: user errors are gr.Error (always shown), any other exception shows no text (it could
    name server paths); the traceback stays in the server log."""
    options = {
        "server_name": os.getenv("GRADIO_SERVER_NAME", "127.0.0.1"),
        "show_error": False,
        "max_file_size": settings.MAX_FILE_BYTES,
        **options,
    }
    return demo.queue(max_size=settings.MAX_QUEUE_SIZE).launch(**options)


if __name__ == "__main__":
    launch()
