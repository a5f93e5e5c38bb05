"""The Open Inference Protocol (KServe V2: Triton, KServe, MLServer, OpenVINO Model Server) as data:
request bodies in, answer bodies out, the binary tensor data extension both ways.

A request carries one batch, as one input tensor of either kind:

    BYTES [N]           encoded images (PNG, JPEG, WebP, ...): binary elements (a 4-byte little-endian
                        length, then the bytes) or base64 strings in JSON
    FP32  [N, C, H, W]  images already preprocessed as the model metadata's parameters say

and gets `probabilities` (FP32 [N, classes]) and `labels` (BYTES [N, k]: the k most probable class
names, most probable first; k from the request's `top_k` parameter, default 5), each in JSON or binary
as the request asks (`binary_data` per output, `binary_data_output` for all). The spec:
https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol and Triton's
binary_data extension
(https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md).
"""
import base64
import binascii
import json
import struct
from dataclasses import dataclass

import numpy as np

HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ["binary_tensor_data"]
IMAGES, PIXELS = "images", "pixels"  # the inputs' names in the metadata (any name is accepted)
OUTPUTS = ("probabilities", "labels")


class ProtocolError(ValueError):
    """A request the protocol cannot accept: answered 400 (or `code`) with {"error": message}."""

    def __init__(self, message: str, code: int = 400):
        super().__init__(message)
        self.code = code


@dataclass
class InferRequest:
    id: str | None
    images: list[bytes] | None  # encoded images, or
    pixels: np.ndarray | None  # float32 [N, C, H, W]
    top_k: int
    outputs: dict[str, bool]  # output name -> binary

    @property
    def batch(self) -> int:
        return len(self.images) if self.images is not None else len(self.pixels)


def _header(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    if header_length is None:
        json_part, binary = body, b""
    else:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise ProtocolError(f"Inference-Header-Content-Length {header_length!r} does not fit a {len(body)}-byte body")
        json_part, binary = body[:int(header_length)], body[int(header_length):]
    try:
        header = json.loads(json_part)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ProtocolError(f"the request is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise ProtocolError("the request must be a JSON object with an 'inputs' list")
    return header, binary


def _bytes_elements(blob: bytes, count: int) -> list[bytes]:
    """BYTES tensor data in the binary form: each element's 4-byte little-endian length, then its bytes."""
    elements, at = [], 0
    while at < len(blob):
        if at + 4 > len(blob):
            raise ProtocolError("BYTES data ends inside an element's length")
        (length,) = struct.unpack_from("<I", blob, at)
        if at + 4 + length > len(blob):
            raise ProtocolError("BYTES data ends inside an element")
        elements.append(blob[at + 4:at + 4 + length])
        at += 4 + length
    if len(elements) != count:
        raise ProtocolError(f"the BYTES input holds {len(elements)} elements, its shape says {count}")
    return elements


def _object(value, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _flat(data) -> list:
    out = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def parse_infer(body: bytes, header_length: str | None, in_chans: int, input_size: int,
                default_top_k: int = 5) -> InferRequest:
    header, binary = _header(body, header_length)
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(f"send one input tensor: BYTES [N] of encoded images (named {IMAGES!r}) or FP32 "
                            f"[N, {in_chans}, {input_size}, {input_size}] of preprocessed pixels (named {PIXELS!r})")
    tensor = inputs[0]
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if not isinstance(shape, list) or not shape or not all(isinstance(s, int) and s >= -1 for s in shape):
        raise ProtocolError(f"input {tensor.get('name')!r}: shape must be a list of sizes, got {shape!r}")
    if -1 in shape[1:] or (shape[0] == -1 and "data" not in tensor):
        raise ProtocolError(f"input {tensor.get('name')!r}: only the batch size of JSON data may be -1, got {shape}")
    if shape[0] == -1:  # the batch as the data says (TorchServe's KServe examples send [-1])
        per_item = int(np.prod(shape[1:]))
        shape = [len(_flat(tensor["data"])) // max(per_item, 1), *shape[1:]]
    parameters = _object(tensor.get("parameters"), "an input's parameters")
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or size > len(binary):
            raise ProtocolError(f"binary_data_size {size!r} does not fit the {len(binary)} binary bytes sent")
        blob = binary[:size]
    elif "data" not in tensor:
        raise ProtocolError(f"input {tensor.get('name')!r} has neither 'data' nor a binary_data_size")
    images = pixels = None
    count = int(np.prod(shape))
    if datatype == "BYTES":
        if len(shape) != 1 and not (len(shape) == 2 and shape[1] == 1):
            raise ProtocolError(f"a BYTES input is [N] encoded images, got shape {shape}")
        if size is not None:
            images = _bytes_elements(blob, count)
        else:
            data = _flat(tensor["data"])
            if len(data) != count or not all(isinstance(d, str) for d in data):
                raise ProtocolError(f"a JSON BYTES input is {count} base64 strings, as its shape says")
            try:
                images = [base64.b64decode(d, validate=True) for d in data]
            except (binascii.Error, ValueError):
                raise ProtocolError("a JSON BYTES input holds images as base64 strings; one is not base64") from None
    elif datatype == "FP32":
        expected = [in_chans, input_size, input_size]
        if len(shape) != 4 or shape[1:] != expected:
            raise ProtocolError(f"an FP32 input is [N, {', '.join(map(str, expected))}] (the model metadata's "
                                f"preprocessing), got {shape}", 422)
        if size is not None:
            if size != 4 * count:
                raise ProtocolError(f"FP32 {shape} is {4 * count} bytes, binary_data_size says {size}")
            pixels = np.frombuffer(blob, dtype="<f4").reshape(shape)
        else:
            data = _flat(tensor["data"])
            if len(data) != count or not all(isinstance(d, (int, float)) and not isinstance(d, bool) for d in data):
                raise ProtocolError(f"a JSON FP32 input of shape {shape} holds {count} numbers")
            pixels = np.asarray(data, dtype=np.float32).reshape(shape)
        if not np.isfinite(pixels).all():
            raise ProtocolError("the FP32 input holds NaN or infinite values", 422)
    else:
        raise ProtocolError(f"input datatype {datatype!r}: send BYTES (encoded images) or FP32 (preprocessed pixels)")
    if count == 0:
        raise ProtocolError("the batch is empty")

    request_parameters = _object(header.get("parameters"), "the request's parameters")
    top_k = request_parameters.get("top_k", default_top_k)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ProtocolError(f"parameter top_k must be a positive integer, got {top_k!r}", 422)
    all_binary = bool(request_parameters.get("binary_data_output", False))
    wanted = header.get("outputs")
    if wanted is None:
        outputs = {name: all_binary for name in OUTPUTS}
    else:
        outputs = {}
        for output in wanted if isinstance(wanted, list) else [None]:
            name = output.get("name") if isinstance(output, dict) else None
            if name not in OUTPUTS:
                raise ProtocolError(f"unknown output {name!r}: this model has {', '.join(OUTPUTS)}")
            outputs[name] = bool(_object(output.get("parameters"), "an output's parameters").get("binary_data", all_binary))
    return InferRequest(header.get("id"), images, pixels, top_k, outputs)


def _bytes_blob(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def encode_infer(request: InferRequest, model_name: str, probabilities: np.ndarray,
                 labels: list[list[str]]) -> tuple[bytes, dict[str, str]]:
    """The answer's body and headers: JSON, or JSON then binary outputs with its length in a header."""
    tensors = {
        "probabilities": ("FP32", list(probabilities.shape), probabilities.astype("<f4")),
        "labels": ("BYTES", [len(labels), len(labels[0]) if labels else 0], labels),
    }
    outputs, blobs = [], []
    for name, binary in request.outputs.items():
        datatype, shape, value = tensors[name]
        output = {"name": name, "datatype": datatype, "shape": shape}
        if binary:
            blob = value.tobytes() if datatype == "FP32" else _bytes_blob([s.encode() for row in value for s in row])
            output["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            output["data"] = value.reshape(-1).tolist() if datatype == "FP32" else [s for row in value for s in row]
        outputs.append(output)
    answer = {"model_name": model_name, "model_version": "1", "outputs": outputs}
    if request.id is not None:
        answer["id"] = request.id
    header = json.dumps(answer).encode()
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {"content-type": "application/octet-stream",
                                      "inference-header-content-length": str(len(header))}


def server_metadata(version: str) -> dict:
    return {"name": "convnext", "version": version, "extensions": EXTENSIONS}


def model_metadata(model_name: str, platform: str, classes: list[str], in_chans: int, input_size: int,
                   preprocessing: dict) -> dict:
    """Inputs and outputs (-1: the batch), and in `parameters` what a client needs to send pixels itself."""
    return {
        "name": model_name, "versions": ["1"], "platform": platform,
        "inputs": [{"name": IMAGES, "datatype": "BYTES", "shape": [-1]},
                   {"name": PIXELS, "datatype": "FP32", "shape": [-1, in_chans, input_size, input_size]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, len(classes)]},
                    {"name": "labels", "datatype": "BYTES", "shape": [-1, -1]}],
        "parameters": {"input": "one of the inputs per request: encoded images, or pixels preprocessed as below",
                       "classes": classes, "input_size": input_size, "in_chans": in_chans, **preprocessing},
    }
