"""Fold py-spy stacks into the verdict's stages by name rules (design.md §2, §3).

A frame is the text py-spy writes for it: ``"function (file:line)"``, with the file shortened to
its package part (``PIL/Image.py``, ``asyncio/base_events.py``, ``app.py``); py-spy ≥ 0.4 writes
methods qualified (``Image.resize``, ``_PollLikeSelector.select``). A stack is a sequence
of frames, **outermost first** (the order of py-spy's raw/folded output).

How one stack is classified (:func:`classify_stack`):

1. **idle** when the innermost frame is a blocking wait (``select``, ``poll``, ``accept``,
   ``sleep``, ``wait``, ``acquire``, a socket read …). py-spy drops threads it sees idle (by OS
   thread state) unless run with ``--idle``, and its raw format has no idle flag, so this catches
   waits it sampled anyway (and every idle thread under ``--idle``).
2. Otherwise frames are walked **innermost → outermost**; the first frame a rule claims decides
   (innermost matching rule wins), with three kinds of rule:

   * *stage rules* — user rules first (``ProbeOptions.stage_rules``), then the defaults: Pillow,
     cv2, torchvision transforms, tokenizers, … and functions *named* like preprocessing
     (preprocess, decode, resize, transform, normalize, featurize, tokenize, …) → ``preprocessing``;
     onnxruntime, torch, tensorflow, xgboost, lightgbm, sklearn ``predict*`` and functions named
     predict/infer/forward → ``inference``. A stage rule also claims everything its frame calls:
     time under ``preprocess()`` is preprocessing however deep it goes.
   * *transparent* library frames — numpy, scipy, the rest of sklearn, json, stdlib helpers — claim
     nothing themselves; the walk goes on outward. So numpy **under a preprocessing frame** is
     preprocessing and numpy under ``predict`` is inference; array and table libraries (numpy,
     pandas, polars, pyarrow) that no outer frame claims are preprocessing (shaping inputs for a
     model), other transparent code under nothing is ``other``.
   * *framework* frames — uvicorn, gunicorn, starlette, fastapi, aiohttp, asyncio, selectors, flask,
     werkzeug, http.server … — give ``framework`` only when nothing but transparent or framework
     code runs inside them. User code that no rule claims, called by the framework, is ``other``:
     a handler's own CPU time is not the framework's.

Name rules look only at frames outside known libraries, so ``decode (json/decoder.py)`` stays JSON
parsing rather than image decoding, and only at the function's own name (:func:`callable_name`),
not at the class py-spy puts before a method.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

#: Categories a sample can land in. Only the first two are verdict stages; the rest say where
#: samples went that belong to no stage (design.md §2).
PROFILE_CATEGORIES = ("preprocessing", "inference", "framework", "idle", "other")


@dataclass(frozen=True)
class StageRule:
    """A regex searched in a frame's ``"function (file:line)"`` text, and the stage it names."""

    pattern: re.Pattern[str]
    stage: str

    @classmethod
    def of(cls, regex: str, stage: str) -> StageRule:
        return cls(re.compile(regex), stage)


def _lib(*packages: str) -> str:
    """A regex matching a frame whose file lies in one of ``packages`` (``PIL``, ``torch/nn``)."""
    alternatives = "|".join(re.escape(p) for p in packages)
    # "(PIL/Image.py:12)" or, with --full-filenames, "(/usr/lib/.../PIL/Image.py:12)".
    return rf"[(/](?:{alternatives})[/.]"


# Library rules, checked in order for each frame (the first that matches the frame wins).
_PREPROCESSING_LIBS = StageRule.of(
    _lib(
        "PIL", "cv2", "torchvision/transforms", "albumentations", "skimage", "imageio",
        "tokenizers", "librosa", "soundfile", "torchaudio/transforms", "timm/data",
        "transformers/image_processing_utils", "sklearn/preprocessing",
        "sklearn/feature_extraction",
    ),
    "preprocessing",
)  # fmt: skip
# transformers' tokenizers live beside its models: name them before the model rule below.
_TRANSFORMERS_TOKENIZER = StageRule.of(r"[(/]transformers/.*token", "preprocessing")
# ``predict_proba``, ``ForestClassifier.predict_proba`` (py-spy ≥ 0.4) and the generator inside
# it, ``ForestClassifier.predict_proba.<locals>.<genexpr>``.
_SKLEARN_PREDICT = StageRule.of(
    r"^(?:\S*\.)?(?:predict\w*|decision_function|score_samples)(?:\.\S*)?\s\([^)]*sklearn/",
    "inference",
)
_INFERENCE_LIBS = StageRule.of(
    _lib(
        "onnxruntime", "torch", "tensorflow", "keras", "xgboost", "lightgbm", "catboost", "jax",
        "jaxlib", "tflite_runtime", "openvino", "tensorrt", "torchvision/models", "transformers",
        "sentence_transformers", "vllm", "triton", "tritonclient",
    ),
    "inference",
)  # fmt: skip
_LIBRARY_RULES = (_PREPROCESSING_LIBS, _TRANSFORMERS_TOKENIZER, _SKLEARN_PREDICT, _INFERENCE_LIBS)

# Web frameworks, servers and event loops.
_FRAMEWORK = re.compile(
    _lib(
        "uvicorn", "gunicorn", "starlette", "fastapi", "aiohttp", "asyncio", "uvloop", "anyio",
        "selectors", "flask", "werkzeug", "socketserver", "http/server", "wsgiref", "h11",
        "httptools", "h2", "hypercorn", "sanic", "tornado", "django", "falcon", "bottle",
        "waitress", "gevent", "eventlet", "multidict", "yarl", "pydantic", "pydantic_core",
        "sniffio", "concurrent/futures", "threading", "socket", "ssl", "trio",
    )
)  # fmt: skip

# Array and table libraries: their caller decides (numpy under ``predict`` is inference), but
# when no frame outside them claims a stage, transforming arrays and tables ahead of a model is
# preprocessing (``np.asarray(img) / 255`` or ``pd.DataFrame(rows)`` in a handler).
_DATA_LIBS = re.compile(_lib("numpy", "pandas", "polars", "pyarrow"))

# Libraries whose frames say nothing about the stage by themselves: their caller decides.
_TRANSPARENT = re.compile(
    _lib(
        "numpy", "scipy", "sklearn", "pandas", "numba", "json", "email", "base64", "io",
        "codecs", "encodings", "copy", "functools", "contextlib", "typing", "abc", "enum", "re",
        "collections",
        "logging", "warnings", "weakref", "tempfile", "os", "posixpath", "genericpath", "pathlib",
        "importlib", "dataclasses", "inspect", "urllib", "struct", "zlib", "gzip", "random", "math",
        "statistics", "orjson", "ujson", "msgpack", "multipart", "python_multipart", "attr",
        "attrs", "six", "queue", "uuid", "datetime", "traceback", "linecache", "operator",
    )
    + r"|\(<frozen |\(<string>"
)  # fmt: skip

_PREPROCESSING_NAME = re.compile(
    r"pre_?process|decode|resize|transform|normali[sz]|featuri[sz]|tokeni[sz]|augment|crop|"
    r"to_tensor|load_image|read_image|open_image|parse_image|prepare_input|collate|rescale|"
    r"standardi[sz]|vectori[sz]|encode_input|extract_features",
    re.IGNORECASE,
)
_INFERENCE_NAME = re.compile(
    r"predict|infer|forward|run_model|model_call|classify|generate|embed",
    re.IGNORECASE,
)

# Innermost frames of a thread that waits rather than works. Matched on the function name alone
# (the callee of a blocking C call is invisible to py-spy without --native).
_IDLE_FUNCTIONS = frozenset(
    {
        "select", "poll", "epoll", "epoll_wait", "kqueue", "control", "accept", "_accept",
        "sleep", "wait", "_wait", "wait_for", "_wait_for_tstate_lock", "acquire", "recv",
        "recv_into", "recvfrom", "readinto", "sock_accept", "_worker_wait", "join",
    }
)  # fmt: skip


def frame_function(frame: str) -> str:
    """The function part of ``"function (file:line)"``."""
    head, sep, _ = frame.partition(" (")
    return head if sep else frame


def callable_name(frame: str) -> str:
    """The name the name rules read: the function's own name, without the class py-spy ≥ 0.4
    puts before a method, so ``PredictionService.parse_request`` is request parsing and not
    prediction. The class stays for a dunder (``ImagePreprocessor.__call__``), where it is the
    only name there is, and a nested function or generator reads as its enclosing function
    (``preprocess.<locals>.<lambda>`` is ``preprocess``)."""
    parts = [p for p in frame_function(frame).split(".") if p and not p.startswith("<")]
    if not parts:
        return frame_function(frame)
    last = parts[-1]
    if last.startswith("__") and last.endswith("__") and len(parts) > 1:
        return f"{parts[-2]}.{last}"
    return last


def frame_file(frame: str) -> str:
    """The file part of ``"function (file:line)"`` (empty when absent)."""
    _, sep, rest = frame.partition(" (")
    if not sep:
        return ""
    return rest.rstrip(")").rsplit(":", 1)[0]


def is_idle_frame(frame: str) -> bool:
    """True when ``frame`` is a blocking wait: the innermost frame of an idle thread.

    py-spy ≥ 0.4 qualifies methods (``_PollLikeSelector.select``, ``Queue.get``); the last
    component is the function.
    """
    name = frame_function(frame).rsplit(".", 1)[-1]
    if name in _IDLE_FUNCTIONS:
        return True
    # queue.Queue.get blocks on a condition; its body is the wait.
    return name == "get" and frame_file(frame).endswith("queue.py")


def compile_rules(rules: Iterable[tuple[str, str]]) -> tuple[StageRule, ...]:
    """User ``(regex, stage)`` pairs (``ProbeOptions.stage_rules``), compiled, order kept."""
    return tuple(StageRule.of(regex, stage) for regex, stage in rules)


def classify_stack(frames: Sequence[str], rules: Sequence[StageRule] = ()) -> str:
    """The category of one stack (outermost frame first); see the module docstring.

    ``rules`` are the user's rules, tried on each frame before the defaults; the stage a user rule
    names is taken as it is (it may be any category, or a verdict stage such as ``oom``).
    """
    frames = [f for f in frames if not _is_meta_frame(f)]
    if not frames:
        return "other"
    if is_idle_frame(frames[-1]):
        # A user rule may still claim a specific wait (e.g. waiting on a model server's queue).
        for rule in rules:
            if rule.pattern.search(frames[-1]):
                return rule.stage
        return "idle"
    unclaimed_inside = False
    data_inside = False
    for frame in reversed(frames):
        for rule in rules:
            if rule.pattern.search(frame):
                return rule.stage
        for rule in _LIBRARY_RULES:
            if rule.pattern.search(frame):
                return rule.stage
        if _FRAMEWORK.search(frame):
            if data_inside:
                return "preprocessing"
            if unclaimed_inside:
                return "other"
            return "framework"
        if _DATA_LIBS.search(frame):
            data_inside = True
            continue
        if _TRANSPARENT.search(frame):
            continue
        name = callable_name(frame)
        if _PREPROCESSING_NAME.search(name):
            return "preprocessing"
        if _INFERENCE_NAME.search(name):
            return "inference"
        unclaimed_inside = True
    return "preprocessing" if data_inside else "other"


def fold_stage_counts(
    stacks: Mapping[tuple[str, ...], float], rules: Sequence[StageRule] = ()
) -> dict[str, float]:
    """Sample counts per category over ``stacks`` (stack → samples, possibly weighted); every
    category present."""
    counts: dict[str, float] = dict.fromkeys(PROFILE_CATEGORIES, 0)
    cache: dict[tuple[str, ...], str] = {}
    for stack, n in stacks.items():
        stage = cache.get(stack)
        if stage is None:
            stage = cache[stack] = classify_stack(stack, rules)
        counts[stage] = counts.get(stage, 0) + n
    return counts


def stage_shares(counts: Mapping[str, float]) -> dict[str, float]:
    """Fractions of the non-idle samples per category (idle itself is left out); {} without any."""
    busy = {k: v for k, v in counts.items() if k != "idle"}
    total = sum(busy.values())
    if total <= 0:
        return {}
    return {k: v / total for k, v in busy.items()}


def _is_meta_frame(frame: str) -> bool:
    """py-spy's ``process PID:"cmdline"`` and ``thread (0x…)`` pseudo-frames."""
    return frame.startswith("process ") or frame.startswith("thread (")
