"""Stage rules on py-spy stacks from several servers (outermost frame first, py-spy's text)."""

from __future__ import annotations

from collections import Counter

import pytest

from pathprobe.probes.stages import (
    PROFILE_CATEGORIES,
    callable_name,
    classify_stack,
    compile_rules,
    fold_stage_counts,
    is_idle_frame,
    stage_shares,
)

# --- stack prefixes of real servers ------------------------------------------------------------

UVICORN_LOOP = [
    "<module> (uvicorn/__main__.py:4)",
    "main (click/core.py:1157)",
    "run (uvicorn/main.py:587)",
    "run (uvicorn/server.py:62)",
    "run (asyncio/runners.py:190)",
    "run_until_complete (asyncio/base_events.py:640)",
    "run_forever (asyncio/base_events.py:607)",
    "_run_once (asyncio/base_events.py:1922)",
    "_run (asyncio/events.py:80)",
]
FASTAPI_ASYNC_HANDLER = UVICORN_LOOP + [
    "run_asgi (uvicorn/protocols/http/httptools_impl.py:426)",
    "__call__ (uvicorn/middleware/proxy_headers.py:84)",
    "__call__ (fastapi/applications.py:1054)",
    "__call__ (starlette/applications.py:123)",
    "__call__ (starlette/middleware/errors.py:164)",
    "__call__ (starlette/routing.py:756)",
    "app (starlette/routing.py:72)",
    "app (fastapi/routing.py:278)",
    "run_endpoint_function (fastapi/routing.py:193)",
]
# A sync FastAPI endpoint runs in anyio's worker thread.
ANYIO_WORKER = [
    "Thread._bootstrap (threading.py:1002)",
    "Thread._bootstrap_inner (threading.py:1045)",
    "WorkerThread.run (anyio/_backends/_asyncio.py:807)",
    "Context.run (<frozen contextvars>:0)",
]
AIOHTTP_HANDLER = [
    "<module> (server.py:120)",
    "run_app (aiohttp/web.py:526)",
    "run_until_complete (asyncio/base_events.py:640)",
    "run_forever (asyncio/base_events.py:607)",
    "_run_once (asyncio/base_events.py:1922)",
    "_run (asyncio/events.py:80)",
    "_handle_request (aiohttp/web_protocol.py:452)",
    "_handle (aiohttp/web_app.py:543)",
]
GUNICORN_SYNC_FLASK = [
    "<module> (gunicorn:8)",
    "run (gunicorn/app/wsgiapp.py:66)",
    "run (gunicorn/arbiter.py:202)",
    "spawn_worker (gunicorn/arbiter.py:609)",
    "init_process (gunicorn/workers/base.py:142)",
    "run (gunicorn/workers/sync.py:125)",
    "run_for_one (gunicorn/workers/sync.py:69)",
    "accept (gunicorn/workers/sync.py:32)",
    "handle (gunicorn/workers/sync.py:135)",
    "handle_request (gunicorn/workers/sync.py:178)",
    "__call__ (flask/app.py:1498)",
    "wsgi_app (flask/app.py:1473)",
    "full_dispatch_request (flask/app.py:880)",
    "dispatch_request (flask/app.py:865)",
]
HTTP_SERVER_THREAD = [
    "Thread._bootstrap (threading.py:1002)",
    "Thread._bootstrap_inner (threading.py:1045)",
    "Thread.run (threading.py:982)",
    "process_request_thread (socketserver.py:691)",
    "finish_request (socketserver.py:361)",
    "__init__ (socketserver.py:755)",
    "handle (http/server.py:436)",
    "handle_one_request (http/server.py:424)",
]
PLAIN_THREAD = [
    "Thread._bootstrap (threading.py:1002)",
    "Thread._bootstrap_inner (threading.py:1045)",
    "Thread.run (threading.py:982)",
]


def test_pillow_decode_under_fastapi_is_preprocessing() -> None:
    stack = FASTAPI_ASYNC_HANDLER + [
        "predict (app/main.py:40)",
        "load (app/images.py:12)",
        "open (PIL/Image.py:3280)",
        "_open (PIL/JpegImagePlugin.py:380)",
    ]
    # Innermost matching rule wins: PIL inside predict() is preprocessing, not inference.
    assert classify_stack(stack) == "preprocessing"


def test_resize_in_anyio_worker_thread_is_preprocessing() -> None:
    stack = ANYIO_WORKER + [
        "classify_image (app/main.py:55)",
        "resize (PIL/Image.py:2200)",
    ]
    assert classify_stack(stack) == "preprocessing"


def test_numpy_under_preprocessing_frame_is_preprocessing() -> None:
    stack = AIOHTTP_HANDLER + [
        "handle_predict (server.py:60)",
        "preprocess_image (server.py:30)",
        "normalize (server.py:22)",
        "mean (numpy/core/_methods.py:118)",
        "_mean (numpy/_core/_methods.py:135)",
    ]
    assert classify_stack(stack) == "preprocessing"


def test_numpy_under_predict_is_inference() -> None:
    stack = AIOHTTP_HANDLER + [
        "handle (server.py:60)",
        "predict (model.py:30)",
        "dot (numpy/_core/multiarray.py:757)",
    ]
    assert classify_stack(stack) == "inference"


def test_array_work_no_frame_claims_is_preprocessing() -> None:
    # Shaping arrays or tables in a handler, ahead of the model (issue 14: numpy, pandas →
    # preprocessing unless a model frame encloses them).
    stack = AIOHTTP_HANDLER + ["handle (server.py:60)", "sum (numpy/_core/fromnumeric.py:2313)"]
    assert classify_stack(stack) == "preprocessing"
    table = HTTP_SERVER_THREAD + ["do_POST (app.py:40)", "__init__ (pandas/core/frame.py:700)"]
    assert classify_stack(table) == "preprocessing"


def test_other_transparent_code_under_nothing_is_other_not_framework() -> None:
    stack = AIOHTTP_HANDLER + ["handle (server.py:60)", "loads (json/__init__.py:346)"]
    assert classify_stack(stack) == "other"


def test_handler_own_cpu_under_framework_is_other() -> None:
    stack = HTTP_SERVER_THREAD + ["do_POST (app.py:40)", "busy_loop (app.py:20)"]
    assert classify_stack(stack) == "other"


def test_framework_code_alone_is_framework() -> None:
    stack = FASTAPI_ASYNC_HANDLER + [
        "serialize_response (fastapi/routing.py:155)",
        "validate_python (pydantic/type_adapter.py:135)",
    ]
    assert classify_stack(stack) == "framework"
    flask_json = GUNICORN_SYNC_FLASK + [
        "make_response (flask/app.py:1250)",
        "dumps (json/__init__.py:238)",
        "encode (json/encoder.py:200)",
    ]
    # json is transparent: the framework that called it is charged, not "decode/encode" names.
    assert classify_stack(flask_json) == "framework"


def test_json_decoder_is_not_image_decoding() -> None:
    stack = AIOHTTP_HANDLER + [
        "json (aiohttp/web_request.py:700)",
        "loads (json/__init__.py:346)",
        "decode (json/decoder.py:337)",
        "raw_decode (json/decoder.py:353)",
    ]
    assert classify_stack(stack) == "framework"


@pytest.mark.parametrize(
    ("inner", "expected"),
    [
        (["run (onnxruntime/capi/onnxruntime_inference_collection.py:220)"], "inference"),
        (["_call_impl (torch/nn/modules/module.py:1527)", "forward (model.py:20)"], "inference"),
        (["__call__ (torchvision/transforms/transforms.py:95)",
          "forward (torchvision/transforms/transforms.py:354)"], "preprocessing"),
        (["predict_proba (sklearn/ensemble/_forest.py:862)",
          "check_array (sklearn/utils/validation.py:900)"], "inference"),
        (["predict (sklearn/pipeline.py:507)",
          "transform (sklearn/preprocessing/_data.py:1043)"], "preprocessing"),
        # py-spy ≥ 0.4 qualifies methods, and shows the generator a forest predicts in.
        (["ForestClassifier.predict_proba (sklearn/ensemble/_forest.py:956)",
          "check_array (sklearn/utils/validation.py:900)"], "inference"),
        (["ForestClassifier.predict_proba.<locals>.<genexpr> (sklearn/ensemble/_forest.py:956)",
          "delayed.<locals>.delayed_function (sklearn/utils/parallel.py:123)"], "inference"),
        (["Pipeline.predict (sklearn/pipeline.py:507)",
          "StandardScaler.transform (sklearn/preprocessing/_data.py:1043)"], "preprocessing"),
        (["ImagePreprocessor.__call__ (app/prep.py:10)", "sum (builtins:0)"], "preprocessing"),
        (["Model.predict (app/model.py:10)", "matmul (app/linalg.py:3)"], "inference"),
        (["preprocess.<locals>.<lambda> (app/prep.py:10)"], "preprocessing"),
        (["predict (xgboost/core.py:2300)"], "inference"),
        (["predict (lightgbm/basic.py:1100)"], "inference"),
        (["__call__ (tensorflow/python/eager/polymorphic_function.py:832)"], "inference"),
        (["__call__ (transformers/tokenization_utils_base.py:2800)"], "preprocessing"),
        (["forward (transformers/models/bert/modeling_bert.py:1000)"], "inference"),
        (["featurize (app/features.py:10)", "sum (builtins:0)"], "preprocessing"),
        (["tokenize_text (app/nlp.py:10)"], "preprocessing"),
        (["run_inference (app/model.py:10)", "matmul (app/linalg.py:3)"], "inference"),
    ],
)  # fmt: skip
def test_library_and_name_rules(inner: list[str], expected: str) -> None:
    assert classify_stack(ANYIO_WORKER + ["endpoint (app/main.py:9)", *inner]) == expected
    assert classify_stack(GUNICORN_SYNC_FLASK + ["view (app.py:9)", *inner]) == expected


@pytest.mark.parametrize(
    "leaf",
    [
        "select (selectors.py:468)",
        "poll (selectors.py:416)",
        "sleep (gunicorn/arbiter.py:360)",
        "wait (threading.py:320)",
        "get (queue.py:171)",
        "accept (socket.py:294)",
        "_wait_for_tstate_lock (threading.py:1132)",
        # py-spy 0.4 qualifies methods.
        "_PollLikeSelector.select (selectors.py:415)",
        "EpollSelector.select (selectors.py:468)",
        "Queue.get (queue.py:171)",
        "socket.accept (socket.py:295)",
        "SocketIO.readinto (socket.py:706)",
        "Condition.wait (threading.py:327)",
    ],
)
def test_idle_leaves(leaf: str) -> None:
    assert is_idle_frame(leaf)
    assert classify_stack(UVICORN_LOOP + [leaf]) == "idle"
    assert classify_stack(PLAIN_THREAD + ["worker (app.py:3)", leaf]) == "idle"


def test_get_outside_queue_is_not_idle() -> None:
    assert not is_idle_frame("get (app/cache.py:10)")
    assert not is_idle_frame("Cache.get (app/cache.py:10)")


def test_py_spy_04_qualified_names() -> None:
    # Real frames of py-spy 0.4.3 on an http.server worker (tests/integration/serverprobe_app.py).
    base = [
        "<module> (serverprobe_app.py:119)",
        "main (serverprobe_app.py:110)",
        "main.<locals>.spawn (serverprobe_app.py:95)",
        "serve (serverprobe_app.py:78)",
        "BaseServer.serve_forever (socketserver.py:238)",
        "BaseServer._handle_request_noblock (socketserver.py:317)",
        "BaseServer.process_request (socketserver.py:348)",
        "BaseServer.finish_request (socketserver.py:361)",
        "BaseRequestHandler.__init__ (socketserver.py:755)",
        "BaseHTTPRequestHandler.handle (http/server.py:436)",
        "BaseHTTPRequestHandler.handle_one_request (http/server.py:424)",
    ]
    assert classify_stack([*base, "Handler.do_POST (serverprobe_app.py:67)",
                           "predict (serverprobe_app.py:50)"]) == "inference"  # fmt: skip
    pre = ["preprocess_image (serverprobe_app.py:42)", "resize (numpy/_core/fromnumeric.py:1571)"]
    assert classify_stack([*base, "Handler.do_POST (serverprobe_app.py:67)", *pre]) == (
        "preprocessing"
    )
    assert classify_stack([*base[:5], "_PollLikeSelector.select (selectors.py:415)"]) == "idle"
    assert classify_stack([*base, "Handler.do_POST (serverprobe_app.py:70)",
                           "BaseHTTPRequestHandler.end_headers (http/server.py:538)",
                           "_SocketWriter.write (socketserver.py:834)"]) == "framework"  # fmt: skip
    assert classify_stack(["Image.resize (PIL/Image.py:2200)"]) == "preprocessing"
    assert classify_stack(["Model.predict (app/model.py:9)"]) == "inference"


def test_plain_thread_preprocessing_and_other() -> None:
    assert classify_stack(PLAIN_THREAD + ["decode_batch (worker.py:10)"]) == "preprocessing"
    assert classify_stack(PLAIN_THREAD + ["crunch (worker.py:10)"]) == "other"


def test_process_and_thread_pseudo_frames_are_ignored() -> None:
    stack = [
        'process 123:"python app.py"',
        "thread (0x7F00AA)",
        "<module> (app.py:3)",
        "resize_all (app.py:2)",
    ]
    assert classify_stack(stack) == "preprocessing"
    assert classify_stack(['process 1:"x"']) == "other"
    assert classify_stack([]) == "other"


def test_user_rules_come_first_and_may_name_any_stage() -> None:
    rules = compile_rules([(r"^score_batch ", "inference"), (r"\(mylib/jpeg", "preprocessing")])
    # Without the user rule "score_batch" would be other.
    stack = PLAIN_THREAD + ["score_batch (svc.py:4)"]
    assert classify_stack(stack) == "other"
    assert classify_stack(stack, rules) == "inference"
    # A user rule beats a default on the same frame (decode_* would be preprocessing anyway,
    # predict_* would be inference: the user rule says preprocessing).
    stack = PLAIN_THREAD + ["predict_entry (mylib/jpeg.py:4)"]
    assert classify_stack(stack) == "inference"
    assert classify_stack(stack, rules) == "preprocessing"
    # User rules may claim a wait, too (time blocked on a downstream model server).
    waiting = PLAIN_THREAD + ["call_triton (svc.py:9)", "wait (threading.py:320)"]
    assert classify_stack(waiting) == "idle"
    assert classify_stack(waiting, compile_rules([(r"^wait \(threading", "inference")])) == (
        "inference"
    )


def test_innermost_rule_wins_across_stages() -> None:
    # A model that preprocesses inside predict(): the inner preprocessing frame wins…
    stack = PLAIN_THREAD + ["predict (m.py:1)", "preprocess (m.py:9)", "x (m.py:20)"]
    assert classify_stack(stack) == "preprocessing"
    # …and a preprocess() that calls the model is inference inside the model call.
    stack = PLAIN_THREAD + ["preprocess (m.py:1)", "run (onnxruntime/capi/session.py:9)"]
    assert classify_stack(stack) == "inference"


def test_fold_and_shares() -> None:
    stacks = Counter(
        {
            tuple(PLAIN_THREAD + ["preprocess (a.py:1)"]): 60,
            tuple(PLAIN_THREAD + ["predict (a.py:2)"]): 30,
            tuple(UVICORN_LOOP + ["select (selectors.py:468)"]): 100,
            tuple(UVICORN_LOOP): 10,
        }
    )
    counts = fold_stage_counts(stacks)
    assert set(counts) == set(PROFILE_CATEGORIES)
    assert counts == {"preprocessing": 60, "inference": 30, "framework": 10, "idle": 100,
                      "other": 0}  # fmt: skip
    shares = stage_shares(counts)
    assert "idle" not in shares
    assert shares["preprocessing"] == pytest.approx(0.6)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert stage_shares({"idle": 5}) == {}


@pytest.mark.parametrize(
    ("frame", "name"),
    [
        ("predict (app.py:3)", "predict"),
        ("Model.predict (app/model.py:10)", "predict"),
        ("ForestClassifier.predict_proba.<locals>.<genexpr> (sklearn/ensemble/_forest.py:956)",
         "predict_proba"),
        ("ImagePreprocessor.__call__ (app/prep.py:10)", "ImagePreprocessor.__call__"),
        ("<module> (app.py:1)", "<module>"),
    ],
)  # fmt: skip
def test_callable_name_is_the_function_not_its_class(frame: str, name: str) -> None:
    assert callable_name(frame) == name


def test_a_class_named_for_prediction_does_not_make_its_parsing_inference() -> None:
    stack = ANYIO_WORKER + [
        "endpoint (app/main.py:9)",
        "PredictionService.parse_request (app/service.py:20)",
    ]
    assert classify_stack(stack) == "other"
