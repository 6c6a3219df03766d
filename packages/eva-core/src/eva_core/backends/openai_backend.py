"""HTTP policy: any OpenAI-compatible `/v1/chat/completions` endpoint (vLLM, `transformers serve`).

Each request becomes one non-streaming chat-completions call; a batch is sent concurrently
(asyncio + httpx, at most `max_concurrency` in flight). Images travel as base64 PNG data URLs
by default, or as `file://` URLs of PNGs written to `image_dir` (vLLM serves those only when
started with `--allowed-local-media-path`; `transformers serve` does not read file URLs).

Messages keep their roles, the protocol's `tool` role included: the server renders them with
the model's own chat template (Qwen2.5-VL's writes `<|im_start|>tool`), which is what EVA was
trained on. A turn that is only text is sent as a string, a turn with images as a list of
parts. `tool_call_id` and `name` are forwarded when a message has them.

Replies: the protocol needs the raw text. vLLM returns it unless started with tool-call
parsing; `transformers serve` returns it for a tokenizer with a pass-through
`response_template` (see `eva_core.tiny_model.RAW_RESPONSE_TEMPLATE`; without one it parses
Qwen replies itself and fails with HTTP 500 on EVA's `{"tool": ...}` calls). When a server
did lift calls into `tool_calls`, they are written back as `<tool_call>` blocks after the
content (`{"name": ..., "arguments": ...}`, the form the server parsed), and
`extra["server_tool_calls"]` says so.

Failures: connection errors, timeouts, 5xx and 429 are retried with exponential backoff
(`backoff_delay`); any other 4xx raises `EndpointRequestError` at once with the server's
message; retries running out raise `EndpointUnavailable`. The API key comes from the
environment (`api_key_env`, else EVA_API_KEY, else OPENAI_API_KEY) and appears in no log,
error or repr.

Token figures come from the response's `usage`; `prefill_tokens` from
`usage.prompt_tokens_details.cached_tokens` when the server reports it (vLLM with prefix
caching), else None. `visual_tokens` is not reported by servers: it is computed here from the
image sizes as (H / 28) * (W / 28) per image (Qwen2.5-VL's merged 28-pixel patches; pass
`visual_patch=None` for other models, which reports 0).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import torch

from eva_core.backends.prefix_cache import image_key
from eva_core.policy import Generation, GenerationConfig, GenerationRequest, Message

log = logging.getLogger(__name__)

DEFAULT_API_KEY_ENVS = ("EVA_API_KEY", "OPENAI_API_KEY")
URL_CACHE_IMAGES = 2048  # encoded images remembered (a few episodes' frames; ~50 KB each as data URLs)


class EndpointError(RuntimeError):
    """The chat-completions endpoint did not give a reply."""


class EndpointRequestError(EndpointError):
    """The server rejected the request (HTTP 4xx other than 429); retrying would not help.

    Attributes:
        status: the HTTP status.
        detail: the server's error message.
    """

    def __init__(self, status: int, detail: str, url: str):
        self.status, self.detail = status, detail
        super().__init__(f"{url} rejected the request with HTTP {status}: {detail}")


class EndpointUnavailable(EndpointError):
    """Connection errors or 5xx/429 answers outlasted the retries.

    Attributes:
        attempts: requests made.
    """

    def __init__(self, attempts: int, last: str, url: str):
        self.attempts = attempts
        super().__init__(f"{url} gave no reply after {attempts} attempts; last: {last}")


def backoff_delay(retry: int, *, initial: float, maximum: float) -> float:
    """Seconds to wait before retry number `retry` (0-based): min(maximum, initial * 2**retry)."""
    return min(maximum, initial * (2.0 ** retry))


def chat_completions_url(base_url: str) -> str:
    """The endpoint for a base URL given as `http://host:port`, `.../v1` or the endpoint itself."""
    url = base_url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


def png_bytes(image: Any) -> bytes:
    """PNG encoding of a uint8 [3, H, W] tensor, an HWC uint8 RGB array or a PIL image.

    Encoded with OpenCV at its default compression, as the released tool wrote its frames:
    2.4 ms for a 308x168 frame where PIL's default level took 23 ms (measured on the 2-core
    development machine), and OpenCV releases the GIL while it encodes. Lossless either way.
    """
    import cv2
    from PIL import Image

    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image tensors must be uint8 [3, H, W], got {image.dtype} {tuple(image.shape)}")
        image = image.permute(1, 2, 0).cpu().numpy()
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise TypeError(f"cannot encode an image of type {type(image).__name__}")
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))  # OpenCV writes BGR
    if not ok:
        raise ValueError(f"OpenCV could not encode an image of shape {image.shape}")
    return encoded.tobytes()


def image_size(image: Any) -> tuple[int, int]:
    """(height, width) of a [3, H, W] tensor, an HWC array or a PIL image."""
    if isinstance(image, torch.Tensor):
        return int(image.shape[-2]), int(image.shape[-1])
    if isinstance(image, np.ndarray):
        return int(image.shape[0]), int(image.shape[1])
    width, height = image.size
    return int(height), int(width)


class OpenAIPolicy:
    """A `Policy` over an OpenAI-compatible chat-completions server.

    Args:
        base_url: `http://host:port`, `http://host:port/v1` or the full endpoint URL.
        model: the `model` field; None asks `/v1/models` once and takes the first id, or
            leaves the field out when the list is empty (`transformers serve MODEL` accepts that).
        api_key_env: environment variable holding the key; None tries EVA_API_KEY then
            OPENAI_API_KEY. No key sends no Authorization header.
        image_format: "data_url" (base64 PNG) or "file_url" (PNG files under `image_dir`).
        image_dir: where file URLs point; a temporary folder by default.
        max_concurrency: requests in flight at once.
        max_retries: retries after the first attempt (connection errors, timeouts, 5xx, 429).
        backoff_initial, backoff_max: seconds, see `backoff_delay`.
        timeout: seconds per attempt.
        visual_patch: pixels per visual token side for `visual_tokens` (28 for Qwen2.5-VL).
        extra_body: fields merged into every request body (server-specific options).
    """

    concurrent_safe = True
    """Each generate call runs its own event loop and client, so threads may call it at once."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key_env: str | None = None,
        image_format: Literal["data_url", "file_url"] = "data_url",
        image_dir: str | os.PathLike | None = None,
        max_concurrency: int = 8,
        max_retries: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 8.0,
        timeout: float = 600.0,
        visual_patch: int | None = 28,
        extra_body: dict[str, Any] | None = None,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if image_format not in ("data_url", "file_url"):
            raise ValueError(f"image_format must be 'data_url' or 'file_url', got {image_format!r}")
        if max_concurrency < 1 or max_retries < 0:
            raise ValueError("max_concurrency must be >= 1 and max_retries >= 0")
        self.url = chat_completions_url(base_url)
        self.models_url = self.url.removesuffix("/chat/completions") + "/models"
        self.model = model
        self._model_resolved = model is not None
        envs = (api_key_env,) if api_key_env else DEFAULT_API_KEY_ENVS
        self._api_key = next((os.environ[e] for e in envs if os.environ.get(e)), None)
        self.image_format = image_format
        self.image_dir = Path(image_dir) if image_dir is not None else None
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.timeout = timeout
        self.visual_patch = visual_patch
        self.extra_body = dict(extra_body or {})
        self._urls: OrderedDict[int, tuple[Any, str]] = OrderedDict()
        self._url_lock = threading.Lock()

    def __repr__(self) -> str:
        key = "set" if self._api_key else "unset"
        return f"OpenAIPolicy(url={self.url!r}, model={self.model!r}, api_key={key})"

    def release(self, episode_id: str) -> None:
        """Nothing to forget: the server keeps its own prefix cache."""

    # -- the Policy API -------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest], config: GenerationConfig) -> list[Generation]:
        """Send the requests concurrently and wait for every reply (see `agenerate`)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.agenerate(requests, config))
        # Called from inside an event loop (a notebook, an async app): run on a private loop.
        result: list[Generation] = []
        error: list[BaseException] = []

        def target() -> None:
            try:
                result.extend(asyncio.run(self.agenerate(requests, config)))
            except BaseException as exc:  # re-raised in the caller's thread
                error.append(exc)

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        if error:
            raise error[0]
        return result

    async def agenerate(self, requests: Sequence[GenerationRequest], config: GenerationConfig) -> list[Generation]:
        """One reply per request, in order; at most `max_concurrency` requests in flight."""
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        limits = httpx.Limits(max_connections=self.max_concurrency)
        async with httpx.AsyncClient(headers=headers, timeout=self.timeout, limits=limits) as client:
            if not self._model_resolved:
                await self._resolve_model(client)
            gate = asyncio.Semaphore(self.max_concurrency)

            async def one(request: GenerationRequest) -> Generation:
                async with gate:
                    return await self._complete(client, request, config)

            return list(await asyncio.gather(*(one(r) for r in requests)))

    # -- requests -------------------------------------------------------------------------------

    def body(self, messages: Sequence[Message], config: GenerationConfig) -> dict[str, Any]:
        """The JSON body for one conversation."""
        body: dict[str, Any] = {
            "messages": [self._message(m) for m in messages],
            "max_tokens": config.max_new_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "stream": False,
        }
        if self.model is not None:
            body["model"] = self.model
        if config.seed is not None:
            body["seed"] = config.seed
        body.update(self.extra_body)
        return body

    def _message(self, message: Message) -> dict[str, Any]:
        content = message.get("content")
        out: dict[str, Any] = {"role": message["role"]}
        for key in ("tool_call_id", "name"):
            if key in message:
                out[key] = message[key]
        if content is None or isinstance(content, str):
            out["content"] = content or ""
            return out
        parts = []
        for part in content:
            if part.get("type") == "image" or "image" in part:
                parts.append({"type": "image_url", "image_url": {"url": self._image_url(part["image"])}})
            elif "image_url" in part:
                parts.append({"type": "image_url", "image_url": part["image_url"]})
            elif "text" in part:
                parts.append({"type": "text", "text": part["text"]})
            else:
                raise ValueError(f"cannot send a message part with keys {sorted(part)}")
        if all(p["type"] == "text" for p in parts):
            out["content"] = "".join(p["text"] for p in parts)
        else:
            out["content"] = parts
        return out

    def _image_url(self, image: Any) -> str:
        """The URL of an image, encoded once: an episode's frames recur in every later turn's
        request, so each is remembered (by object, the object kept alive with it; LRU)."""
        if isinstance(image, str):  # already a URL or a path
            return image if "://" in image or image.startswith("data:") else Path(image).resolve().as_uri()
        with self._url_lock:
            cached = self._urls.get(id(image))
            if cached is not None and cached[0] is image:
                self._urls.move_to_end(id(image))
                return cached[1]
        url = self._encode_url(image)
        with self._url_lock:
            self._urls[id(image)] = (image, url)
            while len(self._urls) > URL_CACHE_IMAGES:
                self._urls.popitem(last=False)
        return url

    def _encode_url(self, image: Any) -> str:
        data = png_bytes(image)
        if self.image_format == "data_url":
            return "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        if self.image_dir is None:
            self.image_dir = Path(tempfile.mkdtemp(prefix="eva-frames-"))
        self.image_dir.mkdir(parents=True, exist_ok=True)
        path = self.image_dir / f"{image_key(image)}.png"
        if not path.exists():
            path.write_bytes(data)
        return path.resolve().as_uri()

    def _visual_tokens(self, messages: Sequence[Message]) -> int:
        if self.visual_patch is None:
            return 0
        total = 0
        for message in messages:
            content = message.get("content")
            if isinstance(content, str) or content is None:
                continue
            for part in content:
                if (part.get("type") == "image" or "image" in part) and not isinstance(part["image"], str):
                    h, w = image_size(part["image"])
                    total += max(1, h // self.visual_patch) * max(1, w // self.visual_patch)
        return total

    async def _resolve_model(self, client: httpx.AsyncClient) -> None:
        response = await self._send(client, "GET", self.models_url, None)
        data = response.json().get("data") or []
        self.model = data[0]["id"] if data else None
        self._model_resolved = True

    async def _send(self, client: httpx.AsyncClient, method: str, url: str, body: dict | None) -> httpx.Response:
        """One HTTP call with retries; returns a 2xx response."""
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = backoff_delay(attempt - 1, initial=self.backoff_initial, maximum=self.backoff_max)
                log.warning("retrying %s in %.2f s (attempt %d of %d): %s", url, delay, attempt + 1,
                            self.max_retries + 1, last)
                await asyncio.sleep(delay)
            try:
                response = await client.request(method, url, json=body)
            except httpx.TransportError as exc:  # connection refused or reset, timeouts
                last = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code < 400:
                return response
            detail = _error_detail(response)
            if response.status_code >= 500 or response.status_code == 429:
                last = f"HTTP {response.status_code}: {detail}"
                continue
            raise EndpointRequestError(response.status_code, detail, url)
        raise EndpointUnavailable(self.max_retries + 1, last, url)

    async def _complete(self, client: httpx.AsyncClient, request: GenerationRequest,
                        config: GenerationConfig) -> Generation:
        start = time.perf_counter()
        response = await self._send(client, "POST", self.url, self.body(request.messages, config))
        try:
            payload = response.json()
            message = payload["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise EndpointError(f"{self.url} answered without a chat completion: {response.text[:500]}") from exc
        text, lifted = reply_text(message)
        usage = payload.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        return Generation(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=int(usage.get("completion_tokens") or 0),
            visual_tokens=self._visual_tokens(request.messages),
            prefill_tokens=prompt_tokens - int(cached) if cached is not None else None,
            finish_reason=finish if (finish := payload["choices"][0].get("finish_reason")) in ("stop", "length") else None,
            seconds=time.perf_counter() - start,
            extra={"finish_reason": payload["choices"][0].get("finish_reason"), "server_tool_calls": lifted},
        )


def reply_text(message: dict[str, Any]) -> tuple[str, bool]:
    """The assistant's raw text from a chat-completions message, and whether tool calls were lifted.

    Tool calls a server parsed out of the text are written back after the content as
    `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks.
    """
    text = message.get("content") or ""
    calls = message.get("tool_calls") or []
    for call in calls:
        fn = call.get("function") or {}
        args = fn.get("arguments")
        if isinstance(args, str):
            with contextlib.suppress(ValueError):  # unparseable: keep the string the server gave
                args = json.loads(args)
        text += "\n<tool_call>\n" + json.dumps({"name": fn.get("name"), "arguments": args}) + "\n</tool_call>"
    return text, bool(calls)


def _error_detail(response: httpx.Response) -> str:
    """The server's error message: OpenAI's {"error": {"message"}}, FastAPI's {"detail"}, or the body."""
    try:
        payload = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(payload, dict):
        err = payload.get("error")
        if isinstance(err, dict) and "message" in err:
            return str(err["message"])
        if err is not None:
            return str(err)
        if "detail" in payload:
            return str(payload["detail"])
    return json.dumps(payload)[:500]
