"""FastAPI app answering the MONAI Label 0.8.5 endpoints that 3D Slicer's MONAI Label module uses.

Endpoints: ``/info/``, ``/infer/{model}``, ``/datastore/`` (+ ``image``, ``label``),
``/activelearning/{strategy}``, ``/auth/``, ``/train/``. Errors answer JSON ``{"error": ...}``
with a 4xx/5xx status and the server keeps serving.

The bearer token and the body size are checked by ASGI middleware (``app.serve.guard``) before
any body byte is read; uploads are checked before their voxels are read (``app.serve.uploads``);
a training run still going when the server stops is stopped with it.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response

import app as volseg
from app.bundles import DEFAULT_BUNDLE
from app.data.verify import InputError
from app.errors import find_cause
from app.serve.datastore import LABEL_SUFFIXES, Datastore, check_id
from app.serve.errors import DatastoreError
from app.serve.guard import RequestGuard
from app.serve.training import TrainingRunner
from app.serve.uploads import UploadLimits

logger = logging.getLogger(__name__)

#: Paths answered without the bearer token (how a client learns that a token is needed, and logs in).
OPEN_PATHS = ("/auth/", "/auth/token")
#: Room for the multipart envelope and form fields around an upload of ``max_upload_mb``.
ENVELOPE_BYTES = 2**20
STRATEGIES = {"random": "a random study without a final label", "first": "the first study (by ID) without a final label"}


@dataclass
class ServerConfig:
    """Settings of ``volseg serve``.

    Attributes:
        store_dir: writable datastore folder (uploads, labels, training runs).
        studies_dir: optional read-only folder of BraTS case folders.
        bundles: bundles served as models (one model instance each): shipped names or bundle
            folders (a ``volseg train`` output), named as in :func:`app.serve.models.served_models`.
        device: ``"cpu"``, ``"cuda"`` or None (CUDA where available).
        token: bearer token required on every path but ``OPEN_PATHS`` (``/auth/``, ``/auth/token``),
            checked before the body is read; None for no auth.
        max_upload_mb: largest accepted upload, in MiB; a request body may be 1 MiB larger
            (multipart envelope), counted as it streams.
        max_inflated_mb: largest size, in MiB, a gzip upload (``.nii.gz``) may inflate to.
        max_voxels: most voxels (all channels) an uploaded header may declare.
    """

    store_dir: Path
    studies_dir: Path | None = None
    bundles: list[str] = field(default_factory=lambda: [DEFAULT_BUNDLE])
    device: str | None = None
    token: str | None = None
    max_upload_mb: float = 512.0
    max_inflated_mb: float = 2048.0
    max_voxels: int = 2**28


class _Models:
    """One lazily loaded ``Segmenter`` per model (model name -> bundle); inference requests are
    serialised per model."""

    def __init__(self, bundles: dict[str, str], device: str | None) -> None:
        self.bundles, self.device = bundles, device
        self._segmenters: dict[str, Any] = {}
        self._locks = {b: threading.Lock() for b in bundles}

    def add(self, model: str, bundle: str) -> None:
        """Serve ``bundle`` as ``model`` too (a finished training run), loaded on its first request."""
        self._locks.setdefault(model, threading.Lock())
        self.bundles[model] = bundle

    def predict(self, model: str, files: list[Path], uncertainty: bool = False, resample: bool = False) -> dict[str, Any]:
        """``Segmenter.run_case`` of one study: ``label``, ``affine`` and, with ``uncertainty``,
        the whole-tumour ``uncertainty`` map and case ``quality``. With ``resample``, a study whose
        sequences lie on different grids is put on its finest grid first
        (:mod:`app.inference.align`): ``resampled`` then gives that grid's file and what was resampled."""
        from app.inference import Segmenter
        from app.inference.align import grid_reference, load_on_grid

        with self._locks[model]:
            key = f"{model}+uncertainty" if uncertainty else model
            if key not in self._segmenters:
                self._segmenters[key] = Segmenter(self.bundles[model], device=self.device, uncertainty=uncertainty)
            segmenter = self._segmenters[key]
            data, record = load_on_grid(segmenter, files, grid_reference(files) if resample else None)
            return {**segmenter.run_case(data), "precision": segmenter.precision, "n4": bool(getattr(segmenter, "n4", False)), "mode": segmenter.mode,
                    **({"resampled": record} if record else {})}


def check_served_weights(bundle: str) -> None:
    """Refuse to serve a bundle without the weights its ``/infer/`` would load (the ct_unet3d
    template ships none), before the server starts, rather than answer every request with 500.

    Raises:
        FileNotFoundError: naming the missing checkpoint and how to train one.
    """
    from app.bundle_config import bundle_parser
    from app.inference.ensemble import check_weights

    check_weights(bundle_parser(bundle, "inference").get_parsed_content("ckpt_path"), bundle, then="serve it with --bundle R")


def _multipart(params: dict[str, Any], filename: str, data: bytes) -> Response:
    boundary = uuid.uuid4().hex
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\nContent-Type: application/json\r\n\r\n'
            f"{json.dumps(params)}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return Response(content=head + data + f"\r\n--{boundary}--\r\n".encode(), media_type=f"multipart/form-data; boundary={boundary}")


def _read_upload(upload: UploadFile, limit: int) -> bytes:
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise DatastoreError(f"upload '{upload.filename}' is larger than the server's limit ({limit / 2**20:g} MiB, --max-upload-mb)", 413)
    return data


def _params(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise DatastoreError(f"'params' is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise DatastoreError("'params' must be a JSON object")
    return value


def _flag(params: dict[str, Any], key: str) -> bool:
    """A boolean of the ``params`` JSON (absent: False); ``"no"`` or ``1`` is refused, not read by its truth."""
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise DatastoreError(f"'params' {key!r} must be true or false (JSON), got {json.dumps(value)}")
    return value


def serve_address(host: str, port: int) -> str:
    """The address to give 3D Slicer, once ``host:port`` is seen to be free (bound and released
    at once, so that a port in use fails before the server builds or writes anything).

    Raises:
        OSError: the port cannot be bound, with the reason and ``--port``.
    """
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a port in TIME_WAIT is free
        try:
            sock.bind((host, port))
        except OSError as err:
            raise OSError(f"cannot listen on {host}:{port}: {err.strerror or err} (another volseg serve, or another program, on that port?); "
                          "choose another with --port") from err
    if host in ("0.0.0.0", "::", ""):
        return f"http://{socket.gethostname()}:{port} (listening on every address of this machine)"
    return f"http://{host}:{port}"


def create_app(config: ServerConfig) -> FastAPI:
    """Build the FastAPI app for ``config`` (see module docstring for the endpoints)."""
    from app.serve.models import served_models

    served = served_models(config.bundles)  # model name -> bundle, labels (app.labels.LabelManager), description
    for model in served.values():
        check_served_weights(model.bundle)
    names = {m: dict(s.labels.labels) for m, s in served.items()}
    codes = {code for n in names.values() for code in n}
    limits = UploadLimits(max_voxels=config.max_voxels, max_inflated_bytes=int(config.max_inflated_mb * 2**20))
    by_name: dict[str, set[int]] = {}
    for n in names.values():
        for code, name in n.items():
            by_name.setdefault(name, set()).add(code)
    label_names = {name: next(iter(c)) for name, c in by_name.items() if len(c) == 1}  # a name with two codes is not remapped
    store = Datastore(config.store_dir, config.studies_dir, codes, limits, label_names)
    models = _Models({m: s.bundle for m, s in served.items()}, config.device)
    runner = TrainingRunner(store, store.store_dir / "train", config.device)
    limit = int(config.max_upload_mb * 2**20)
    checked_runs: dict[Path, str | None] = {}  # finished run folder -> the model it is served as (None: not servable)
    serving = threading.Lock()

    def serve_finished_run() -> str | None:
        """Serve the last training run, once it ended DONE, as one more model named after its folder
        (``<bundle>_<run id>``, as ``--bundle <folder>`` would name it after a restart), so that a
        client picks it from ``/info/`` without a restart. A run whose folder is not a bundle with
        weights, or whose labels differ from every served model's (the datastore checks uploads
        against those), is not served, with one warning. Returns the model name, or None."""
        run = runner.finished_bundle()
        if run is None:
            return None
        with serving:
            if run in checked_runs:
                return checked_runs[run]
            checked_runs[run] = None
            try:
                [(name, model)] = served_models([str(run)]).items()
                check_served_weights(model.bundle)
            except (ValueError, OSError) as err:
                logger.warning(f"the finished training run '{run}' is not served: {err}")
                return None
            if name in served or dict(model.labels.labels) not in names.values():
                why = f"a model named '{name}' is served already" if name in served else "its labels differ from the served models'"
                logger.warning(f"the finished training run '{run}' is not served: {why}; serve it with --bundle {run}")
                return None
            served[name], names[name] = model, dict(model.labels.labels)
            models.add(name, model.bundle)
            checked_runs[run] = name
            logger.info(f"serving the finished training run as model '{name}' ({run})")
            return name

    serve_finished_run()  # a run an earlier server finished

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        runner.shutdown()

    api = FastAPI(title="VolSeg (MONAI Label protocol)", version=volseg.__version__, lifespan=lifespan)
    api.state.datastore = store
    api.add_middleware(RequestGuard, token=config.token, max_body_bytes=limit + ENVELOPE_BYTES, open_paths=OPEN_PATHS,
                       limit_text=f"uploads up to {config.max_upload_mb:g} MiB, --max-upload-mb")

    @api.exception_handler(RequestValidationError)
    async def _request_error(request: Request, err: RequestValidationError) -> JSONResponse:  # FastAPI's own 422 has no "error" key
        problems = "; ".join(f"{e.get('msg', 'invalid')}: {'.'.join(str(p) for p in e.get('loc', ()))}" for e in err.errors())
        return JSONResponse({"error": f"bad request: {problems}", "detail": jsonable_encoder(err.errors())}, status_code=422)

    @api.exception_handler(DatastoreError)
    async def _datastore_error(request: Request, err: DatastoreError) -> JSONResponse:
        return JSONResponse({"error": str(err), "detail": str(err)}, status_code=err.status)

    @api.exception_handler(InputError)
    async def _input_error(request: Request, err: InputError) -> JSONResponse:
        return JSONResponse({"error": str(err), "detail": str(err)}, status_code=422)

    @api.exception_handler(RuntimeError)  # handled here, not by Starlette's server-error middleware, which re-raises
    async def _runtime_error(request: Request, err: RuntimeError) -> JSONResponse:
        cause = find_cause(err, InputError)  # MONAI's "applying transform <...>" wrapper of a bad study: its cause
        if cause is None:
            return await _any_error(request, err)
        logger.warning(f"{request.method} {request.url.path}: {cause}")
        return JSONResponse({"error": str(cause), "detail": str(cause)}, status_code=422)

    @api.exception_handler(Exception)
    async def _any_error(request: Request, err: Exception) -> JSONResponse:
        logger.exception(f"{request.method} {request.url.path} failed")
        return JSONResponse({"error": f"{type(err).__name__}: {err}", "detail": str(err)}, status_code=500)

    @api.get("/info/")
    def info() -> dict[str, Any]:
        serve_finished_run()
        models_now = list(served.items())  # a finished training run may be added by another request meanwhile
        labels = {name: code for n in list(names.values()) for code, name in sorted(n.items())}
        return {
            "name": "VolSeg", "description": "VolSeg bundles served over the MONAI Label protocol", "version": volseg.__version__,
            "labels": labels,
            "models": {m: {"type": "segmentation", "labels": s.labels.names_to_values(), "dimension": 3,
                           "description": s.description, "config": {}} for m, s in models_now},
            "trainers": {m: {"description": f"train {m} on the studies with a final label", "config": {"max_epochs": 50}} for m, _ in models_now},
            "strategies": {k: {"description": v} for k, v in STRATEGIES.items()},
            "scoring": {}, "train_stats": runner.stats(), "datastore": store.stats(),
        }

    @api.post("/infer/{model}")
    def infer(model: str, image: str, params: str | None = Form(default=None), output: str | None = None) -> Response:
        if model not in served:
            serve_finished_run()
        if model not in served:
            raise DatastoreError(f"unknown model '{model}'; models: {', '.join(served)}", 404)
        p = _params(params)
        ext = p.get("result_extension", ".nii.gz")
        if ext not in LABEL_SUFFIXES:
            raise DatastoreError(f"result_extension '{ext}' not supported; use one of {', '.join(LABEL_SUFFIXES)}")
        if p.get("result_dtype", "uint8") != "uint8":
            raise DatastoreError(f"result_dtype '{p['result_dtype']}' not supported; label maps are uint8")
        try:  # params {"label_codes": "2023"}: BraTS 2023+ codes (ET 3), refused before the model runs where the model cannot
            codes = str(p.get("label_codes", "2018"))
            labels, code_map = served[model].labels.with_codes(codes), served[model].labels.code_map(codes)
        except ValueError as err:
            raise DatastoreError(f"params 'label_codes': {err}") from None
        files = store.modality_files(image)
        start = time.perf_counter()
        case = models.predict(model, files, uncertainty=_flag(p, "uncertainty"), resample=_flag(p, "resample"))
        from app.transforms.regions import relabelled

        label = relabelled(case["label"], code_map)
        done = time.perf_counter()
        from app.io.writers import write_label_like, write_map_like

        reference = store.image_file(image)  # the FLAIR, or the first sequence of a study without one
        if "resampled" in case:  # params {"resample": true}: the label is on the study's finest grid
            reference = Path(case["resampled"]["grid"])
        with tempfile.TemporaryDirectory() as tmp:
            out = write_label_like(label, reference, Path(tmp) / f"{image}_seg{ext}")
            data = out.read_bytes()
        total = time.perf_counter() - start
        result = {"label_names": labels.names_to_values(),
                  "latencies": {"pre": 0.0, "infer": round(done - start, 3), "invert": 0.0, "post": 0.0, "write": round(total - (done - start), 3),
                                "total": round(total, 3), "transform": None}}
        if "resampled" in case:
            result["resampled"] = case["resampled"]
        if case.get("missing_sequences"):  # what the study lacks, and what that costs on the bundle's cross-validation
            from app.bundles import ran_int8, run_subset_cv

            cv, source = run_subset_cv(served[model].bundle, case["missing_sequences"], case["n4"], ran_int8(case["precision"]), case.get("mode"))
            result["missing_sequences"] = list(case["missing_sequences"])
            result["missing_sequences_cv_dice"] = cv
            result["missing_sequences_cv_source"] = (source or "float32, without N4") if cv else None
        if case.get("input_warnings"):  # e.g. a sequence that is not skull-stripped: MONAI Label clients show "params"
            result["warnings"] = list(case["input_warnings"])
        if "uncertainty" in case:  # params {"uncertainty": true}: the map goes beside the labels, for 3D Slicer to load
            write_map_like(case["uncertainty"], reference, store.uncertainty_path(image))
            result["uncertainty"] = {"url": f"/datastore/uncertainty?image={image}", "quality": case["quality"],
                                     "description": "whole-tumour entropy in bits (float32, the study's geometry); quality: ranks cases for review (lower: less sure), not a Dice estimate"}
        if output == "json":
            return JSONResponse(result)
        if output == "image":
            return Response(content=data, media_type="application/octet-stream", headers={"Content-Disposition": f'attachment; filename="{image}_seg{ext}"'})
        return _multipart(result, f"{image}_seg{ext}", data)

    @api.get("/datastore/uncertainty")
    def get_uncertainty(image: str) -> FileResponse:
        path = store.uncertainty_path(image)
        if not path.is_file():
            raise DatastoreError(f"no uncertainty map for image '{image}'; run /infer/<model> with params {{\"uncertainty\": true}}", 404)
        return FileResponse(path, filename=f"{image}_uncertainty.nii.gz", media_type="application/octet-stream")  # not the image's own name

    @api.get("/datastore/")
    def datastore(output: str = "stats") -> Any:
        if output == "all":
            return store.describe()
        if output == "train":
            return store.training_items()
        if output == "stats":
            return store.stats()
        raise DatastoreError(f"output must be all, train or stats, got '{output}'")

    @api.api_route("/datastore/image", methods=["GET", "HEAD"])
    def get_image(image: str) -> FileResponse:
        path = store.image_file(image)
        return FileResponse(path, filename=path.name, media_type="application/octet-stream")

    def _put_image(image: str | None, file: UploadFile) -> dict[str, Any]:
        image_id = image or Path(file.filename or "").name.split(".")[0]
        check_id(image_id)
        store.add_image(image_id, file.filename or "upload.nii.gz", _read_upload(file, limit))
        return {"image": image_id}

    @api.put("/datastore/image")
    def put_image(file: UploadFile = File(...), image: str | None = None, params: str | None = Form(default=None)) -> dict[str, Any]:
        return _put_image(image, file)

    @api.put("/datastore/")
    def put_image_client(file: UploadFile = File(...), image: str | None = None, params: str | None = Form(default=None)) -> dict[str, Any]:
        return _put_image(image, file)

    @api.put("/datastore/label")
    def put_label(image: str, label: UploadFile = File(...), tag: str = "final", params: str | None = Form(default=None)) -> dict[str, Any]:
        path = store.save_label(image, label.filename or "label.nii.gz", _read_upload(label, limit), tag, {"params": _params(params)})
        return {"image": image, "label": image, "tag": tag, "ext": next(s for s in LABEL_SUFFIXES if path.name.endswith(s))}

    @api.get("/datastore/label")
    def get_label(label: str, tag: str = "final") -> FileResponse:
        path = store.label_file(label, tag)
        if path is None:
            raise DatastoreError(f"no '{tag}' label for image '{label}'", 404)
        return FileResponse(path, filename=path.name, media_type="application/octet-stream")

    @api.post("/activelearning/{strategy}")
    def activelearning(strategy: str) -> dict[str, Any]:
        if strategy not in STRATEGIES:
            raise DatastoreError(f"unknown strategy '{strategy}'; strategies: {', '.join(STRATEGIES)}", 404)
        pending = store.unlabeled()
        if not pending:
            return {}
        image_id = random.choice(pending) if strategy == "random" else pending[0]
        return {"id": image_id, "name": store.image_file(image_id).name, "weight": 1.0}

    @api.get("/auth/")
    def auth() -> dict[str, Any]:
        return {"enabled": bool(config.token), "client_id": "volseg", "realm_uri": ""}

    @api.post("/auth/token")
    def auth_token(username: str = Form(default=""), password: str = Form(default="")) -> dict[str, Any]:
        if not config.token:
            return {"access_token": "", "token_type": "bearer"}
        if password != config.token:
            raise DatastoreError("wrong password (use the server's token)", 401)
        return {"access_token": config.token, "token_type": "bearer"}

    @api.get("/auth/token/valid")
    def auth_valid() -> dict[str, Any]:
        return {"valid": True}

    @api.get("/train/")
    def train_status(check_if_running: bool = False) -> Any:
        status = runner.status()
        if status.get("status") == "DONE" and (name := serve_finished_run()):
            status["served_as"] = name  # the model name to pick in the client (/infer/<name>)
        if check_if_running and status.get("status") != "RUNNING":
            return JSONResponse({"error": "no training running", "detail": "no training running"}, status_code=404)
        return status

    @api.post("/train/")
    @api.post("/train/{model}")
    async def train_start(request: Request, model: str | None = None) -> Any:
        body = await request.body()
        p = _params(body.decode() if body else None)
        name = model or next(iter(served))
        if name not in served:
            raise DatastoreError(f"unknown model '{name}'; models: {', '.join(served)}", 404)
        return runner.start(served[name].bundle, p)

    @api.delete("/train/")
    def train_stop() -> Any:
        return runner.stop()

    return api
