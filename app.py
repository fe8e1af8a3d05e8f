"""FaceShield web app: layout and callbacks only; the work happens in src/faceshield."""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import threading

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("YOLO_OFFLINE", "1")

try:  # ZeroGPU on Hugging Face Spaces; `spaces` must be imported before torch
    import spaces
except ImportError:  # anywhere else the decorator is a no-op
    spaces = None

import gradio as gr  # noqa: E402

from faceshield import compare, lab, settings  # noqa: E402
from faceshield.examples import examples  # noqa: E402
from faceshield.protections import METHODS, declared  # noqa: E402
from faceshield.protections.base import NAMES, PATH, PHOTOS, SUBSET, Cancelled, Param, stop_when  # noqa: E402  # noqa: E402
from faceshield.service import (  # noqa: E402
    DETECTOR_COLUMNS,
    MODEL_COLUMNS,
    RECOGNISER_COLUMNS,
    model_rows,
    protect_photo,
)
from faceshield.settings import KNOBS, InputError, Knob  # noqa: E402
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


def knob_slider(key: str, step: float, value: float, label: str, **options) -> gr.Slider:
    """A slider spanning the bounds settings.KNOBS[key] accepts (the Attack lab's)."""
    return gr.Slider(KNOBS[key].low, KNOBS[key].high, value=value, step=step, label=label, **options)


# The Protect page's options are the protections' declared ones (protections.base.Param with
# a page `group`): one control per option name, shared by the protections that declare it,
# shown when the chosen one does. The /protect API's inputs: PAGE_HEAD, those options, PAGE_TAIL.
PAGE_HEAD = ("image_path", "method")
PAGE_TAIL = ("slow_judges", "reference_path")
INITIAL_METHOD = "detector-pgd"


def page_options() -> dict[str, list[tuple[str, Param]]]:
    """The options the Protect page shows, by name (in the order first declared), each with every
    protection's (key, Param) that shows it."""
    shown = {name: [(k, p) for k, p in decls if p.group and p.kind is not PATH] for name, decls in declared().items()}
    return {name: decls for name, decls in shown.items() if decls}


def protect_inputs() -> list[str]:
    """The /protect endpoint's inputs, in order (their API names)."""
    return [*PAGE_HEAD, *page_options(), *PAGE_TAIL]


def _varies(decls: list[tuple[str, Param]]) -> bool:
    """Does the option mean something else for different protections (an obfuscation's strength)?"""
    return len({(p.label, p.page_low, p.page_high, p.low, p.high) for _, p in decls}) > 1


def _control_label(param: Param, decls) -> str:
    if _varies(decls) and param.numeric:  # the range changes with the protection: say it
        knob = param.knob(page=True)
        return f"{param.label}, {knob.low:g} to {knob.high:g}"
    return param.label


# The events that do work run with preprocess=False, so every input reaches its callback raw
# and is checked here, before any work: numbers against settings.KNOBS (Gradio's slider check
# lets NaN through and fails with a TypeError on text), choices against the page's lists, and
# uploads handed to FaceShield's own loader untouched (Gradio has already checked the file was
# uploaded here; its decoding would convert the photo first and, on a file it cannot read,
# show the server path).


def _upload(payload) -> str | None:
    """The path of an uploaded file from its raw payload (None: nothing uploaded)."""
    if payload is None:
        return None
    if not isinstance(payload, dict) or not payload.get("path"):
        raise InputError("This upload could not be read as a file.")
    return payload["path"]


def _choice(value, choices, what: str):
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{what} must be one of: {', '.join(choices)}.")
    return value


def _choices(values, choices, what: str) -> list[str]:
    """A list of distinct choices (a ticked CheckboxGroup), in the page's order."""
    if not isinstance(values, list) or not values:
        raise InputError(f"Tick at least one of {what}.")
    for value in values:
        _choice(value, choices, what)
    return [c for c in choices if c in values]


def _flag(value, what: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"'{what}' must be true or false.")
    return value


def _option(value, param: Param):
    """One page option's raw value, checked against its declaration (the page's range)."""
    if value is None or value == "" or (param.kind is PHOTOS and value == []):
        return None
    if param.kind is PHOTOS:
        if not isinstance(value, list):
            raise InputError(f"The {param.message_name} must be a list of photos.")
        if len(value) > settings.MAX_TARGETS:
            raise InputError(f"Give at most {settings.MAX_TARGETS} {param.message_name} (got {len(value)}).")
        return [_upload(v) for v in value]
    return param.check(value, page=True)


def _unused_option(value, decls: list[tuple[str, Param]]):
    """An option the chosen protection does not declare: its value is not used, but it must be
    one that a protection declaring it accepts (a mask's grey level of 128 left in the control
    when the page switched to another protection passes; NaN or 1e9 does not)."""
    errors = []
    for _, param in decls:
        try:
            return _option(value, param)
        except InputError as exc:
            errors.append(exc)
    raise errors[0]


def page_inputs(values: dict) -> dict:
    """The Protect page's raw inputs (by protect_inputs() name), checked, as protect_photo's
    keyword arguments (InputError otherwise). Each option is checked against the chosen
    protection's declaration, or, when it does not declare it (the value is then not used),
    against those of the protections that do; an empty value means the protection's default."""
    method = _choice(values.get("method"), tuple(METHODS), "The protection")
    options = {}
    for name, decls in page_options().items():
        param = METHODS[method].param(name)
        options[name] = _option(values.get(name), param) if param else _unused_option(values.get(name), decls)
    source = _upload(values.get("image_path"))
    if not source:
        raise InputError("Upload a photo first (or click an example).")
    return {
        "source": source,
        "method": method,
        "slow_judges": _flag(values.get("slow_judges", False), "Also run slow detectors"),
        "reference": _upload(values.get("reference_path")),
        **options,
    }


def _seconds_for(steps, knob: Knob) -> int:
    """ZeroGPU time to reserve: grows with the iterations asked for (the callback refuses bad ones)."""
    try:
        steps = knob.check(steps)
    except InputError:
        steps = knob.low
    return int(30 + 0.5 * steps)


def _gpu_seconds(values: dict, *args, **kwargs) -> int:
    """The Protect page's reservation, from its steps option."""
    steps = page_options().get("steps")
    asked = values.get("steps") if isinstance(values, dict) else None
    return _seconds_for(asked, steps[0][1].knob(page=True)) if steps else 30


def _lab_gpu_seconds(image_path, method, eps, steps, *args, **kwargs) -> int:
    return _seconds_for(steps, KNOBS["lab_steps"])


def _sweep_gpu_seconds(image_path, method, steps, *args, **kwargs) -> int:
    """The sweep runs one attack per budget (five)."""
    return 5 * _seconds_for(steps, KNOBS["lab_steps"])


def _compare_gpu_seconds(image_path, methods, *args, **kwargs) -> int:
    """One protection at default settings after another."""
    return _gpu_seconds({}) * max(1, len(methods) if isinstance(methods, list) else 1)


def _on_gpu(fn=None, seconds=_gpu_seconds):
    """ZeroGPU decorator for every callback that moves models to a device (no-op elsewhere)."""
    if fn is None:
        return lambda f: _on_gpu(f, seconds)
    if spaces is None:
        return fn

    @functools.wraps(fn)
    def with_deadline(*args, **kwargs):
        # ZeroGPU runs this in another process: the request's stop event cannot follow it there
        with stop_when(None, settings.MAX_SECONDS):
            return fn(*args, **kwargs)

    return spaces.GPU(duration=seconds)(with_deadline)


# Heavy work (protect, lab, sweep) shares one concurrency group of settings.CONCURRENCY_LIMIT
# slots. Gradio cannot stop a sync handler's thread: when a request is cancelled (or its client
# goes away) Gradio cancels the async handler below, which sets the request's stop event; the
# attack loop sees it at its next step (protections.base.check_stop) and ends. A semaphore keeps
# a new request waiting until a cancelled one's thread has really finished, so at most
# CONCURRENCY_LIMIT attacks run at any moment.
_slots = threading.BoundedSemaphore(settings.CONCURRENCY_LIMIT)
_running_lock = threading.Lock()
heavy_running = 0  # heavy callbacks running in this process now (tests read it)
HEAVY = "heavy"  # the concurrency_id of every heavy event


def _bounded(stop: threading.Event, fn, args):
    global heavy_running
    while not _slots.acquire(timeout=0.1):
        if stop.is_set():
            raise Cancelled
    try:
        with _running_lock:
            heavy_running += 1
        with stop_when(stop, settings.MAX_SECONDS):
            return fn(*args)
    finally:
        with _running_lock:
            heavy_running -= 1
        _slots.release()


def _client_gone(request: gr.Request | None) -> bool:
    """Has the client of `request` gone away (Gradio marks its running events not alive when
    the page's event stream disconnects, but does not cancel them)? Reads Gradio's queue
    internals, so any surprise there means "no"."""
    try:
        session = request.session_hash
        jobs = [event for job_set in demo._queue.active_jobs if job_set for event in job_set]
        return any(event.session_hash == session and not event.alive for event in jobs)
    except Exception:
        return False


async def _heavy(request, fn, *args):
    """fn(*args) in a worker thread, stopped at its next attack step if this request is
    cancelled or its client disconnects."""
    stop = threading.Event()
    work = asyncio.ensure_future(asyncio.to_thread(_bounded, stop, fn, args))
    work.add_done_callback(lambda done: done.cancelled() or done.exception())  # a Cancelled nobody awaits
    try:
        while True:
            done, _ = await asyncio.wait({work}, timeout=0.5)
            if done:
                return work.result()
            if _client_gone(request):
                stop.set()
    except asyncio.CancelledError:
        stop.set()
        raise


@_on_gpu
def run(values: dict):
    """The Protect page's work: `values` are its raw inputs by protect_inputs() name."""
    try:
        page = protect_photo(**page_inputs(values))
    except InputError as exc:  # bad inputs and unusable photos (ImageError): the message is for the user
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


@_on_gpu(seconds=_compare_gpu_seconds)
def run_compare(image_path, methods, on_progress=None):
    try:
        chosen = _choices(methods, tuple(METHODS), "the protections to compare")
        source = _upload(image_path)
        if not source:
            raise InputError("Upload a photo first (or click an example).")
        result = compare.compare(source, chosen, on_progress=on_progress)
    except InputError as exc:
        raise gr.Error(str(exc)) from None
    notes = "\n".join(f"- {n}" for n in result.notices)
    return result.table(), result.plot(), result.crops(), notes


def _lab_photo(image_path):
    """The lab's photo (a raw upload payload) as pixels (InputError when missing or unusable)."""
    from faceshield.images import load_image

    source = _upload(image_path)
    if not source:
        raise InputError("Upload a photo first (or click an example).")
    return load_image(source).pixels


@_on_gpu(seconds=_lab_gpu_seconds)
def run_lab(image_path, method, eps, steps):
    try:
        method = _choice(method, lab.lab_methods(), "The attack")
        eps, steps = KNOBS["lab_eps"].check(eps), KNOBS["lab_steps"].check(steps)
        pixels = _lab_photo(image_path)
    except InputError as exc:
        raise gr.Error(str(exc)) from None
    trace = lab.trace_attack(pixels, method, eps, steps)
    last = len(trace.iterates) - 1
    return (
        trace,
        gr.Slider(minimum=0, maximum=last, value=last, step=1, interactive=True),
        *show_iteration(trace, last),
    )


def show_iteration(trace, step):
    if trace is None:
        return None, None, None, ""
    try:
        step = Knob("The iteration", 0, len(trace.iterates) - 1, integer=True).check(step)
    except InputError as exc:
        raise gr.Error(str(exc)) from None
    original, current = trace.iterates[0], trace.iterates[step]
    views = [(lab.amplified(original, current, f), f"perturbation x{f}") for f in (1, 10, 50)]
    loss = f"loss {trace.loss[step - 1]:.3f}" if step >= 1 else "clean photo"
    return current, views, lab.plot_trace(trace, step), f"**Iteration {step}** of {len(trace.iterates) - 1}: {loss}"


@_on_gpu(seconds=_sweep_gpu_seconds)
def run_sweep(image_path, method, steps):
    try:
        method = _choice(method, lab.lab_methods(), "The attack")
        steps = KNOBS["lab_steps"].check(steps)
        pixels = _lab_photo(image_path)
    except InputError as exc:
        raise gr.Error(str(exc)) from None
    rows = lab.budget_sweep(pixels, method, steps=steps)
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


# The events' handlers: the same inputs (Gradio's API names them after these parameters),
# run through _heavy; tqdm progress of the attack loops reaches the page.


def protect_handler(names: list[str]):
    """The /protect event's handler, whose inputs are `names`: Gradio names the API's parameters
    after the handler's signature, made here from the declared options. Runs through _heavy."""

    async def protect(*args):
        *values, request, _progress = args
        return await _heavy(request, run, dict(zip(names, values)))

    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter(n, positional, default=False if n == "slow_judges" else None) for n in names]
    params += [
        inspect.Parameter("request", positional, default=None, annotation=gr.Request),
        inspect.Parameter("progress", positional, default=gr.Progress(track_tqdm=True)),
    ]
    protect.__signature__ = inspect.Signature(params)
    protect.__annotations__ = {"request": gr.Request}
    return protect


async def compare_protections(image_path, methods, request: gr.Request = None, progress=gr.Progress()):
    def step(i, n, method):
        progress((i, n), desc=f"{method} ({i + 1} of {n})" if i < n else "done", unit="protections")

    # ZeroGPU runs run_compare in another process, where the page's progress cannot follow
    return await _heavy(request, run_compare, image_path, methods, step if spaces is None else None)


async def lab_attack(image_path, method, eps, steps, request: gr.Request = None, progress=gr.Progress(track_tqdm=True)):
    return await _heavy(request, run_lab, image_path, method, eps, steps)


async def lab_sweep(image_path, method, steps, request: gr.Request = None, progress=gr.Progress(track_tqdm=True)):
    return await _heavy(request, run_sweep, image_path, method, steps)


def method_controls(key: str) -> list:
    """Show the controls of the options the chosen protection declares for the page (in
    page_options() order) and hide the others; an option whose meaning differs between
    protections (an obfuscation's strength) takes this one's label, range and default."""
    cls, updates = METHODS[key], []
    for name, decls in page_options().items():
        param = cls.param(name)
        shown = param is not None and bool(param.group)
        if not _varies(decls):
            updates.append(gr.update(visible=shown))
        elif not shown:
            updates.append(gr.update(visible=False, value=None))
        else:
            knob = param.knob(page=True)
            label = _control_label(param, decls)
            updates.append(
                gr.update(visible=True, label=label, value=param.default, minimum=knob.low, maximum=knob.high)
            )
    return updates


def option_control(decls: list[tuple[str, Param]], method: str):
    """The page's control of one declared option as the protection `method` shows it (hidden
    when it does not declare it)."""
    param = dict(decls).get(method)
    visible = param is not None
    param = param or decls[0][1]
    label = _control_label(param, decls)
    if param.kind is bool:
        return gr.Checkbox(value=param.default, label=label, visible=visible)
    if param.kind is PHOTOS:
        return gr.File(label=label, file_count="multiple", file_types=["image"], type="filepath", visible=visible)
    if param.kind in (NAMES, SUBSET):
        return gr.CheckboxGroup(list(param.choices), value=list(param.default), label=label, visible=visible)
    if param.choices:
        choices = list(zip(param.choice_labels, param.choices)) if param.choice_labels else list(param.choices)
        return gr.Radio(choices, value=param.default, label=label, visible=visible)
    if param.numeric and not _varies(decls):
        knob = param.knob(page=True)
        return gr.Slider(knob.low, knob.high, value=param.default, step=param.step or 1, label=label, visible=visible)
    if param.numeric:
        return gr.Number(value=param.default if visible else None, label=label, visible=visible)
    return gr.Textbox(value=param.default, label=label, visible=visible)


def heavy_event(button: gr.Button, handler, inputs: list, outputs: list, api_name: str) -> None:
    """Wire a button to heavy work: the shared concurrency group (HEAVY) and raw inputs that the
    callback checks itself (preprocess=False)."""
    button.click(
        handler,
        inputs,
        outputs,
        api_name=api_name,
        concurrency_limit=settings.CONCURRENCY_LIMIT,
        concurrency_id=HEAVY,
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
    options = page_options()
    groups: dict[str, list[str]] = {}
    for name, decls in options.items():
        groups.setdefault(decls[0][1].group, []).append(name)
    controls = {}
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            image = gr.Image(label="Photo", type="filepath", format="png", sources=["upload", "clipboard"])
            method = gr.Dropdown(
                [(cls.title, key) for key, cls in METHODS.items()], value=INITIAL_METHOD, label="Protection"
            )
            for name in groups.pop("main", []):
                controls[name] = option_control(options[name], INITIAL_METHOD)
            with gr.Accordion("Advanced options", open=False):
                for name in groups.pop("advanced", []):
                    controls[name] = option_control(options[name], INITIAL_METHOD)
                slow_judges = gr.Checkbox(label="Also run slow detectors (dlib CNN, ~4 s)")
                for heading, names in groups.items():  # one protection's own options, under its heading
                    gr.Markdown(f"**{heading}**")
                    for name in names:
                        controls[name] = option_control(options[name], INITIAL_METHOD)
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
    shown = [controls[name] for name in options]
    method.change(method_controls, method, shown, api_name=False)
    heavy_event(
        button,
        protect_handler(protect_inputs()),
        [image, method, *shown, slow_judges, reference],
        [slider, perturbation, download, gallery, detector_table, recogniser_table, summary, verdict],
        "protect",
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
                [(f"{cls.title} ({key})", key) for key, cls in METHODS.items()],
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
    heavy_event(button, compare_protections, [image, methods], [table, plot, crops, notes], "compare")


def lab_page() -> None:
    gr.Markdown(
        "Step through an attack one iteration at a time: how the models' confidence falls "
        "while the perturbation grows, and what the budget buys."
    )
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            lab_image = gr.Image(label="Photo", type="filepath", format="png")
            lab_method = gr.Radio(
                [(METHODS[key].title, key) for key in lab.lab_methods()], value="detector-pgd", label="Attack"
            )
            lab_eps = knob_slider("lab_eps", 1, 8, "Budget (grey levels of 255)")
            lab_steps = knob_slider("lab_steps", 5, 40, "Iterations", elem_id="lab-steps")
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
        [lab_image, lab_method, lab_eps, lab_steps],
        [lab_trace, lab_step, lab_view, lab_amplified, lab_plot, lab_caption],
        "lab",
    )
    lab_step.release(
        show_iteration,
        [lab_trace, lab_step],
        [lab_view, lab_amplified, lab_plot, lab_caption],
        api_name=False,
        preprocess=False,
    )
    heavy_event(sweep_button, lab_sweep, [lab_image, lab_method, lab_steps], [sweep_plot, sweep_table], "sweep")


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
