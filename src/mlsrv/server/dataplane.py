"""DataPlane: the only business logic the REST and gRPC frontends call.

Frontends decode the wire into ``protocol.types``, call one method here, and encode the result. All
request validation that TF Serving does against the signature (``predict_util.cc``,
``classifier.cc``, ``regressor.cc``) happens here once, so both transports give the same errors.
Runs on the event loop; model calls go through the version's batcher or the executor.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from mlsrv.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
    MlsrvError,
    ModelNotFound,
    Unimplemented,
)
from mlsrv.protocol.types import (
    CLASSIFY_METHOD,
    PREDICT_METHOD,
    REGRESS_METHOD,
    ClassifyResponse,
    ExamplesRequest,
    InferenceMethod,
    ModelMetadata,
    ModelSpec,
    ModelStatus,
    MultiInferenceTask,
    PredictRequest,
    PredictResponse,
    RegressResponse,
    SignatureInfo,
)
from mlsrv.server.batching_pool import BatchingPool
from mlsrv.server.inline_policy import InlinePolicy
from mlsrv.server.manager import Lease, Manager
from mlsrv.server.metrics import Metrics
from mlsrv.server.monitor import StateMonitor
from mlsrv.server.request_log import RequestLogger
from mlsrv.server.signature_checks import (
    batch_output,
    check_input_dtypes,
    check_input_names,
    check_inputs,
    check_output_filter,
    signature_text,
)

#: Signature kinds Predict may run when ``--enable_signature_method_name_check`` is on (TF's ``VerifySignature``).
_PREDICTABLE_METHODS = frozenset({PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD})


class DataPlane:
    """Predict, classify, regress, metadata and status over the Manager's servables."""

    def __init__(
        self,
        manager: Manager,
        monitor: StateMonitor,
        executor: concurrent.futures.Executor,
        batching: BatchingPool | None = None,
        *,
        method_name_check: bool = False,
        metrics: Metrics | None = None,
        request_log: RequestLogger | None = None,
    ) -> None:
        """``request_log``: successful inference calls are offered to it (TF's ``logging_config``)."""
        self._metrics = metrics
        self._request_log = request_log
        self._manager = manager
        self._monitor = monitor
        self._executor = executor
        self._batching = batching
        self._method_name_check = method_name_check
        self._inline = InlinePolicy()

    # -- lookups used by the REST decoder, which needs the signature before it can parse inputs --

    def signatures_or_error(self, spec: ModelSpec) -> Mapping[str, SignatureInfo] | MlsrvError:
        """The signatures of the version ``spec`` resolves to, or the error resolving it.

        Returned, not raised: TF Serving reports a bad JSON document before an unknown model, so
        the REST decoder (``rest_decode.predict_request``) raises it only once the body has parsed.
        """
        try:
            _, servable = self._manager.peek(spec)
        except MlsrvError as error:
            return error
        return servable.signatures()

    # -- predict --

    async def predict(self, request: PredictRequest, deadline: float | None = None) -> PredictResponse:
        """Validate the request against the signature (in ``RunPredict``'s order) and run it."""
        name = request.spec.signature_or_default
        with self._manager.lease(request.spec) as lease:
            signature = self._predict_signature(lease.servable.signatures(), name)
            inputs = check_inputs(request.inputs, signature)
            output_filter = check_output_filter(request.output_filter, signature)
            check_input_dtypes(inputs, signature)
            started = time.perf_counter_ns()
            outputs = await self._run(lease, name, inputs, output_filter, deadline)
            if self._metrics is not None:
                self._metrics.record_runtime(request.spec.name, "Predict", (time.perf_counter_ns() - started) // 1000)
            response = PredictResponse(_resolved(request.spec, lease.id.version, name), outputs)
            if self._request_log is not None:
                self._request_log.predict(request, response)
            return response

    def check_predict_target(self, spec: ModelSpec, input_names: Iterable[str]) -> None:
        """The checks TF's Predict makes before it parses any input tensor: model, version or label,
        signature, and input count and aliases. A frontend that fails to parse a tensor calls this
        first, so it reports what TF would have reported first."""
        _, servable = self._manager.peek(spec)
        check_input_names(input_names, self._predict_signature(servable.signatures(), spec.signature_or_default))

    def _predict_signature(self, signatures: Mapping[str, SignatureInfo], name: str) -> SignatureInfo:
        signature = signatures.get(name)
        if signature is None:
            raise FailedPrecondition(f'Serving signature key "{name}" not found.')
        if self._method_name_check and signature.method_name not in _PREDICTABLE_METHODS:
            raise InternalError(
                "Expected prediction signature method_name to be one of {tensorflow/serving/predict, "
                f"tensorflow/serving/classify, tensorflow/serving/regress}}. Was: {signature.method_name}"
            )
        return signature

    # -- classify / regress --

    async def classify(self, request: ExamplesRequest, deadline: float | None = None) -> ClassifyResponse:
        with self._manager.lease(request.spec) as lease:
            response = await self._classify(lease, request, deadline)
        if self._request_log is not None:
            self._request_log.examples(request, response)
        return response

    async def regress(self, request: ExamplesRequest, deadline: float | None = None) -> RegressResponse:
        with self._manager.lease(request.spec) as lease:
            response = await self._regress(lease, request, deadline)
        if self._request_log is not None:
            self._request_log.examples(request, response)
        return response

    async def multi_inference(
        self,
        tasks: Sequence[MultiInferenceTask],
        examples: list[bytes],
        deadline: float | None = None,
    ) -> list[ClassifyResponse | RegressResponse]:
        """Several classify/regress signatures of one model version over the same examples.

        As TF's ``TensorFlowMultiInferenceRunner``: the first task's spec picks the servable, then each
        task is checked in turn (name, same model, duplicate, signature, method, signature shape)
        before any runs. Since TF Serving 2.4 (commit abb8d3b5, ``testMultiInferenceTf2``) signatures
        may read different input tensors, as each signature of a TF2 export does: the same serialized
        examples feed every one of them.
        """
        if not tasks:
            raise InvalidArgument("Found no tasks in the MultiInferenceRequest.")
        with self._manager.lease(tasks[0].spec) as lease:
            signatures = lease.servable.signatures()
            seen: set[str] = set()
            for task in tasks:
                spec = task.spec
                if not spec.name:
                    raise InvalidArgument("Found ModelSpec with an empty model name.")
                if spec.name != tasks[0].spec.name:
                    raise InvalidArgument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
                if spec.signature_or_default in seen:
                    raise InvalidArgument(f"Duplicate evaluation of signature: {spec.signature_or_default}")
                seen.add(spec.signature_or_default)
                if spec.signature_or_default not in signatures:
                    raise InvalidArgument(f"Requested signature not found in model graph: {spec.signature_or_default}")
                if task.method is None:
                    raise Unimplemented(f"Unsupported signature method_name: {task.method_name}")
                request = ExamplesRequest(spec, task.method, examples)
                check = self._classify_signature if task.method is InferenceMethod.CLASSIFY else self._regress_signature
                check(signatures, request)
            results: list[ClassifyResponse | RegressResponse] = []
            for task in tasks:
                request = ExamplesRequest(task.spec, task.method or InferenceMethod.CLASSIFY, examples)
                if task.method is InferenceMethod.CLASSIFY:
                    results.append(await self._classify(lease, request, deadline, record=False))
                else:
                    results.append(await self._regress(lease, request, deadline, record=False))
            if self._metrics is not None:  # TF counts a MultiInference's examples once, and no runtime
                self._metrics.record_examples(tasks[0].spec.name, len(examples))
        if self._request_log is not None:
            self._request_log.multi_inference(tasks, examples, results)
        return results

    async def _classify(
        self, lease: Lease, request: ExamplesRequest, deadline: float | None, *, record: bool = True
    ) -> ClassifyResponse:
        name, signature = self._classify_signature(lease.servable.signatures(), request)
        classes_key = "classes" if "classes" in signature.outputs else None
        scores_key = "scores" if "scores" in signature.outputs else None
        outputs = await self._run_examples(lease, name, signature, request, deadline, record)
        n = len(request.examples)
        classes = batch_output(outputs, classes_key, n, "classes") if classes_key else None
        scores = batch_output(outputs, scores_key, n, "scores") if scores_key else None
        if scores is not None:
            scores = scores.astype(np.float32, copy=False)
        return ClassifyResponse(_resolved(request.spec, lease.id.version, name), classes, scores)

    def _classify_signature(
        self, signatures: Mapping[str, SignatureInfo], request: ExamplesRequest
    ) -> tuple[str, SignatureInfo]:
        """TF's ``PreProcessClassification`` checks."""
        name, signature = self._examples_signature(signatures, request)
        if "classes" not in signature.outputs and "scores" not in signature.outputs:
            raise InvalidArgument(
                'Expected classification signature outputs to contain at least one of "classes" or '
                f'"scores". Signature was: {signature_text(signature)}'
            )
        return name, signature

    async def _regress(
        self, lease: Lease, request: ExamplesRequest, deadline: float | None, *, record: bool = True
    ) -> RegressResponse:
        name, signature = self._regress_signature(lease.servable.signatures(), request)
        outputs = await self._run_examples(lease, name, signature, request, deadline, record)
        values = batch_output(outputs, "outputs", len(request.examples), "outputs")
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1:
            raise InvalidArgument(
                "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
                f"{list(values.shape)}"
            )
        return RegressResponse(_resolved(request.spec, lease.id.version, name), values.astype(np.float32, copy=False))

    def _regress_signature(
        self, signatures: Mapping[str, SignatureInfo], request: ExamplesRequest
    ) -> tuple[str, SignatureInfo]:
        """TF's ``PreProcessRegression`` checks."""
        name, signature = self._examples_signature(signatures, request)
        if "outputs" not in signature.outputs:
            raise InvalidArgument(f"No regression outputs found in SignatureDef: {signature_text(signature)}")
        return name, signature

    def _examples_signature(
        self, signatures: Mapping[str, SignatureInfo], request: ExamplesRequest
    ) -> tuple[str, SignatureInfo]:
        """The checks ``PreProcessClassification`` and ``PreProcessRegression`` share, in TF's order."""
        name = request.spec.signature_or_default
        signature = signatures.get(name)
        if signature is None:
            raise InvalidArgument(f"No signature was found with the name: {name}")
        classify = request.method is InferenceMethod.CLASSIFY
        kind = "classification" if classify else "regression"
        method = CLASSIFY_METHOD if classify else REGRESS_METHOD
        if self._method_name_check and signature.method_name != method:
            raise InvalidArgument(
                f"Expected {kind} signature method_name to be {method}. Was: {signature.method_name}"
            )
        if len(signature.inputs) != 1:
            raise InvalidArgument("Expected one input Tensor.")
        outputs = len(signature.outputs)
        if classify and outputs not in (1, 2):
            raise InvalidArgument(f"Expected one or two output Tensors, found {outputs}")
        if not classify and outputs != 1:
            raise InvalidArgument("Expected one output Tensor.")
        if "inputs" not in signature.inputs:
            raise InvalidArgument(f"No {kind} inputs found in SignatureDef: {signature_text(signature)}")
        return name, signature

    async def _run_examples(
        self,
        lease: Lease,
        name: str,
        signature: SignatureInfo,
        request: ExamplesRequest,
        deadline: float | None,
        record: bool,
    ) -> dict[str, np.ndarray]:
        """Run the examples; ``record``: runtime latency and example count (TF's classifier/regressor)."""
        if not request.examples:
            raise InvalidArgument("Input is empty.")
        tensor = np.empty(len(request.examples), dtype=object)
        tensor[:] = request.examples
        started = time.perf_counter_ns()
        outputs = await self._run(lease, name, {"inputs": tensor}, tuple(signature.outputs), deadline)
        if record and self._metrics is not None:
            api = "Classify" if request.method is InferenceMethod.CLASSIFY else "Regress"
            self._metrics.record_runtime(request.spec.name, api, (time.perf_counter_ns() - started) // 1000)
            self._metrics.record_examples(request.spec.name, len(request.examples))
        return outputs

    # -- metadata / status --

    def metadata(self, spec: ModelSpec) -> ModelMetadata:
        """Every signature of the resolved version; the spec echoes name and version, no signature."""
        servable_id, servable = self._manager.peek(spec)
        return ModelMetadata(ModelSpec(spec.name, servable_id.version), dict(servable.signatures()))

    def labels(self, name: str) -> dict[str, int]:
        """The version labels of ``name`` now (label -> version)."""
        return self._manager.labels(name)

    def status_or_empty(self, name: str) -> ModelStatus:
        """Status of every version seen for ``name`` (empty when none yet); for ``GET /v1/models``."""
        return self._monitor.states(name)

    def status(self, spec: ModelSpec) -> ModelStatus:
        """TF Serving's GetModelStatus: all versions (a label is ignored) or one version."""
        status = self._monitor.states(spec.name)
        if spec.version is not None:  # TF's GetModelStatusImpl takes the version branch first
            chosen = tuple(v for v in status.versions if v.version == spec.version)
            if not chosen:
                raise ModelNotFound(f"Could not find version {spec.version} of model {spec.name}")
            return ModelStatus(status.name, chosen)
        if not status.versions:
            raise ModelNotFound(f"Could not find any versions of model {spec.name}")
        return status

    # -- running --

    async def _run(
        self,
        lease: Lease,
        signature: str,
        inputs: dict[str, np.ndarray],
        output_filter: Sequence[str],
        deadline: float | None,
    ) -> dict[str, np.ndarray]:
        servable = lease.servable
        loop = asyncio.get_running_loop()
        if deadline is not None and loop.time() >= deadline:
            raise DeadlineExceeded("Deadline exceeded before the request was run")
        if self._batching is not None:
            batcher = await self._batching.batcher_for(lease.id, signature, servable)
            if batcher is not None and _batchable(inputs):
                if self._metrics is not None:
                    self._metrics.record_batch_input(inputs)
                outputs = await batcher.submit(inputs, deadline)
                return {key: outputs[key] for key in output_filter} if output_filter else outputs
        key = (lease.id, signature)
        filtered = tuple(output_filter)
        if self._inline.inline(key, sum(a.nbytes for a in inputs.values())):
            started = time.perf_counter()
            result = servable.run(signature, inputs, filtered)
            self._inline.record(key, time.perf_counter() - started)
            return result
        call = loop.run_in_executor(self._executor, _timed, servable.run, signature, inputs, filtered)
        timeout = None if deadline is None else max(0.0, deadline - loop.time())
        try:
            result, seconds = await asyncio.wait_for(call, timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceeded("Deadline Exceeded") from None
        self._inline.record(key, seconds)
        return result


def _timed(
    run: Callable[[str, dict[str, np.ndarray], tuple[str, ...]], dict[str, np.ndarray]],
    signature: str,
    inputs: dict[str, np.ndarray],
    output_filter: tuple[str, ...],
) -> tuple[dict[str, np.ndarray], float]:
    """Run on the executor and measure the model call alone (the hop is not the model's cost)."""
    started = time.perf_counter()
    result = run(signature, inputs, output_filter)
    return result, time.perf_counter() - started


def _resolved(spec: ModelSpec, version: int, signature: str) -> ModelSpec:
    return ModelSpec(spec.name, version, None, signature)


def _batchable(inputs: Mapping[str, np.ndarray]) -> bool:
    """Only inputs with a shared leading dimension can be merged with other requests."""
    dims = {array.shape[0] if array.ndim else None for array in inputs.values()}
    return len(dims) == 1 and None not in dims


__all__ = ["DataPlane"]
