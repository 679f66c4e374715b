"""A small Glance v2 client over httpx: only the calls introspect makes, with failover.

Identity is either a keystoneauth1 session (tokens from keystone; the image endpoint from the
catalog unless configured) or fixed identity headers for a keystone-less Glance (see
settings.py). Transport is httpx either way: one request per call, no hidden retries.

Several endpoints (several glance-api hosts of one deployment) are used round-robin. A
connection error, a timeout or a 5xx sends the request to the next endpoint and leaves the
failed one alone for a cool-down period; only when the call failed `attempts` times in all
does it raise `GlanceUnavailable` (a `Transient` fault: the task retries later). The tries are
tenacity's (`Retrying`), pausing with exponential backoff only while every endpoint cools down.
Every call the client makes is safe to repeat: GETs, and PATCHes whose `add` ops replace.

Errors, as one small tree under the pipeline's:

    PipelineError
     ├── GlanceError            Glance answered 4xx: status, Glance's own message, the call
     │    ├── ImageGone         404: no such image (deleted meanwhile), also a NotFound
     │    ├── Forbidden         403: a policy or a property protection said no
     │    ├── Conflict          409: the patch named a key that is not there any more
     │    └── QuotaExceeded     413: more properties than image_property_quota
     └── Transient
          └── GlanceUnavailable no endpoint answered (connection errors, timeouts, 5xx)
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from introspect.errors import SourceError
from workers.errors import NotFound, PipelineError, Transient
from workers.glance.refs import ImageRef, ImageRefError, normalize_endpoint
from workers.glance.settings import GlanceSettings

log = logging.getLogger(__name__)

PATCH_MEDIA_TYPE = "application/openstack-images-v2.1-json-patch"
#: Longest Glance error text kept in a message (Glance sometimes answers with an HTML page).
MAX_ERROR_TEXT = 300
#: Most images one listing page asks for (Glance caps it at api_limit_max, 1000 by default).
PAGE_SIZE = 200
#: Most pages one listing walks: 1000 pages of 200 images, far beyond any real catalog's size
#: per sync pass; a `next` link that never ends must not loop forever.
MAX_PAGES = 1000
#: The pause before the next try while every endpoint cools down: 0.2 s, doubling, at most 2 s.
#: While one is up, the next try goes to it at once.
BACKOFF = wait_exponential(multiplier=0.2, max=2.0)
CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
#: A plain `GET /v2/images` shows even an admin only part of what it may see: no hidden image
#: (`os_hidden` defaults to false) and no other project's community image (without a
#: `visibility`, community images are the caller's own only); glance/db/sqlalchemy/api.py,
#: _image_get_all, Glance 33. `visibility=all` lifts the second (an admin then sees every project's
#: public, private, shared and community images); hidden images need a listing of their own.
EVERY_VISIBILITY = {"visibility": "all"}
#: The two listings, disjoint: no image comes twice.
HIDDEN_OR_NOT = ("false", "true")


class GlanceError(PipelineError, SourceError):
    """Glance refused a call (4xx). `status` and Glance's own words are kept. A SourceError too:
    raised from a range read (the image deleted, a policy), `introspect.inspect` lets it through
    instead of judging the image by it."""

    def __init__(self, status: int, call: str, text: str) -> None:
        self.status = status
        self.call = call
        self.text = _glance_message(text)
        super().__init__(f"{call}: Glance answered {status}: {self.text}")


class ImageGone(GlanceError, NotFound):
    """404: the image does not exist (or was deleted while we worked on it)."""

    def __init__(self, status: int, call: str, text: str) -> None:
        GlanceError.__init__(self, status, call, text)


class Forbidden(GlanceError):
    """403: a policy or a property protection forbids the call."""


class Conflict(GlanceError):
    """409: the image changed under us (a key we meant to replace or remove is gone)."""


class QuotaExceeded(GlanceError):
    """413: the image would have more properties than image_property_quota allows."""


class GlanceUnavailable(Transient, SourceError):
    """No endpoint answered the call; each attempt's failure is in the message."""


ERRORS: Mapping[int, type[GlanceError]] = {404: ImageGone, 403: Forbidden, 409: Conflict, 413: QuotaExceeded}


def _glance_message(text: str) -> str:
    """Glance's error bodies are small HTML pages (title and heading "403 Forbidden", then the
    sentence, HTML-escaped); keep the sentence."""
    text = html.unescape(re.sub(r"<title>.*?</title>|<[^>]+>", " ", text, flags=re.DOTALL))
    text = " ".join(text.split())
    status = re.match(r"(\d{3}) ", text)
    if status and int(status.group(1)) in HTTPStatus.__members__.values():
        heading = f"{status.group(1)} {HTTPStatus(int(status.group(1))).phrase}"
        while text.startswith(heading):
            text = text.removeprefix(heading).lstrip()
    return text[:MAX_ERROR_TEXT] or "(no message)"


class Identity(Protocol):
    """Who we are to Glance: headers for each request, and where the image API is."""

    def headers(self) -> dict[str, str]: ...

    def invalidate(self) -> bool:
        """Drop a cached token; True when a retry may now succeed."""
        ...

    def endpoint(self) -> str | None: ...


@dataclass(frozen=True)
class HeaderIdentity:
    """Keystone-less: the identity keystonemiddleware would have put in the headers, stated."""

    roles: Sequence[str]
    project_id: str
    user_id: str

    def headers(self) -> dict[str, str]:
        return {
            "X-Identity-Status": "Confirmed",
            "X-Roles": ",".join(self.roles),
            "X-Project-Id": self.project_id,
            "X-User-Id": self.user_id,
        }

    def invalidate(self) -> bool:
        return False

    def endpoint(self) -> str | None:
        return None


class KeystoneIdentity:
    """A keystoneauth1 session: a token per request, the image endpoint from the catalog."""

    def __init__(self, session: Any, *, interface: str, region_name: str | None) -> None:
        self.session = session
        self.interface = interface
        self.region_name = region_name

    def headers(self) -> dict[str, str]:
        return dict(self.session.get_auth_headers() or {})

    def invalidate(self) -> bool:
        return bool(self.session.invalidate())

    def endpoint(self) -> str | None:
        found = self.session.get_endpoint(
            service_type="image", interface=self.interface, region_name=self.region_name
        )
        return str(found) if found else None


def keystone_identity(settings: GlanceSettings, environ: Mapping[str, str] | None = None) -> KeystoneIdentity:
    """The usual OpenStack settings: OS_CLOUD (clouds.yaml) or OS_* variables, via keystoneauth1."""
    from keystoneauth1 import loading, session

    env = os.environ if environ is None else environ
    interface = env.get("OS_INTERFACE", settings.interface)
    region = env.get("OS_REGION_NAME", settings.region_name or "") or None
    verify: bool | str = env.get("OS_CACERT") or env.get("OS_INSECURE", "").lower() not in (
        "1",
        "true",
        "yes",
    )
    if env.get("OS_CLOUD"):
        cloud = _clouds_yaml_entry(env["OS_CLOUD"], env)
        auth_type = str(cloud.get("auth_type", "password"))
        options = {key.replace("-", "_"): value for key, value in dict(cloud.get("auth", {})).items()}
        interface = str(cloud.get("interface", interface))
        region = cloud.get("region_name", region)
        if "cacert" in cloud:
            verify = str(cloud["cacert"])
        elif cloud.get("verify") is False or cloud.get("insecure") is True:
            verify = False
    else:
        auth_type = env.get("OS_AUTH_TYPE", "password")
        options = {}
    loader: Any = loading.get_plugin_loader(auth_type)
    for opt in loader.get_options():
        for variable in opt.argparse_envvars:
            if opt.dest not in options and variable in env:
                options[opt.dest] = env[variable]
    auth = loader.load_from_options(**options)
    return KeystoneIdentity(
        session.Session(auth=auth, verify=verify), interface=interface, region_name=region
    )


def _clouds_yaml_entry(cloud: str, env: Mapping[str, str]) -> dict[str, Any]:
    """The named cloud from the first clouds.yaml found where openstacksdk looks for it."""
    import yaml  # type: ignore[import-untyped]

    candidates = [env.get("OS_CLIENT_CONFIG_FILE", ""), "clouds.yaml"]
    candidates += [str(Path.home() / ".config" / "openstack" / "clouds.yaml"), "/etc/openstack/clouds.yaml"]
    for candidate in filter(None, candidates):
        path = Path(candidate)
        if path.is_file():
            clouds = (yaml.safe_load(path.read_text()) or {}).get("clouds", {})
            if cloud in clouds:
                return dict(clouds[cloud])
            raise GlanceConfigError(
                f"{path} has no cloud named {cloud!r} (it has: {', '.join(clouds) or 'none'})"
            )
    raise GlanceConfigError(
        f"OS_CLOUD={cloud} but no clouds.yaml was found (looked in {', '.join(candidates[1:])})"
    )


class GlanceConfigError(PipelineError):
    """The settings do not say where Glance is or who we are."""


@dataclass
class Endpoints:
    """Round-robin over endpoints; a failed one is skipped until its cool-down has passed."""

    urls: Sequence[str]
    cooldown: float
    clock: Callable[[], float] = time.monotonic
    _next: int = 0
    _down_until: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def pick(self) -> str:
        """The next endpoint that is up; when all are cooling down, the one that comes back first."""
        with self._lock:
            now = self.clock()
            count = len(self.urls)
            for step in range(count):
                url = self.urls[(self._next + step) % count]
                if self._down_until.get(url, 0.0) <= now:
                    self._next = (self._next + step + 1) % count
                    return url
            return min(self.urls, key=lambda url: self._down_until.get(url, 0.0))

    def failed(self, url: str) -> None:
        with self._lock:
            self._down_until[url] = self.clock() + self.cooldown

    def down(self) -> list[str]:
        now = self.clock()
        return [url for url in self.urls if self._down_until.get(url, 0.0) > now]


@dataclass
class Stats:
    """What the client did: requests per endpoint, failovers, image data bytes received."""

    requests: dict[str, int] = field(default_factory=dict)
    failovers: int = 0
    range_requests: int = 0
    data_bytes: int = 0


class GlanceClient:
    """The calls introspect makes on the image API v2, each with failover."""

    def __init__(
        self,
        endpoints: Sequence[str],
        identity: Identity,
        *,
        cooldown: float = 30.0,
        attempts: int = 4,
        timeout: httpx.Timeout | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not endpoints:
            raise GlanceConfigError(
                "no Glance endpoint: set INTROSPECT_GLANCE_ENDPOINTS=http://host:9292 (comma-separated "
                "for several), or OS_CLOUD / OS_AUTH_URL to find it in the keystone catalog"
            )
        self.endpoints = Endpoints([normalize_endpoint(url) for url in endpoints], cooldown)
        self.identity = identity
        self.attempts = max(attempts, 1)
        self.stats = Stats()
        self._http = httpx.Client(
            timeout=timeout or httpx.Timeout(60.0, connect=5.0), transport=transport, follow_redirects=False
        )

    @classmethod
    def from_settings(cls, settings: GlanceSettings) -> GlanceClient:
        identity: Identity
        if settings.uses_keystone:
            identity = keystone_identity(settings)
        else:
            identity = HeaderIdentity(settings.roles, settings.project_id, settings.user_id)
        endpoints = list(settings.endpoints)
        if not endpoints:
            discovered = identity.endpoint()
            endpoints = [discovered] if discovered else []
        return cls(
            endpoints,
            identity,
            cooldown=settings.cooldown,
            attempts=settings.attempts,
            timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GlanceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the calls -------------------------------------------------------------------------------

    def image_id(self, ref: ImageRef) -> str:
        """The id of a parsed reference, refusing an href whose endpoint is not configured: our
        credentials only go where the operator pointed them."""
        if ref.endpoint is not None and ref.endpoint not in self.endpoints.urls:
            raise ImageRefError(
                f"the reference names Glance at {ref.endpoint}, which is not a configured endpoint "
                f"({', '.join(self.endpoints.urls)}): pass the bare id, or add the endpoint to "
                "INTROSPECT_GLANCE_ENDPOINTS"
            )
        return ref.id

    def get_image(self, image_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v2/images/{quote(image_id)}", call=f"GET image {image_id}")

    def patch_image(self, image_id: str, ops: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return self._json(
            "PATCH",
            f"/v2/images/{quote(image_id)}",
            call=f"PATCH image {image_id}",
            content=json.dumps(list(ops)).encode(),
            headers={"Content-Type": PATCH_MEDIA_TYPE},
        )

    def get_task(self, task_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v2/tasks/{quote(task_id)}", call=f"GET task {task_id}")

    def iter_images(self, **filters: str) -> Iterator[dict[str, Any]]:
        """Every image the filters select that we may see (as admin: of every project and every
        visibility, hidden ones included; see EVERY_VISIBILITY), page by page (Glance's `next`
        links), oldest change first unless `sort` says otherwise: the images that are not hidden,
        then the hidden ones. A `visibility` or `os_hidden` filter narrows the listing."""
        base: dict[str, str] = {"limit": str(PAGE_SIZE), "sort": "updated_at:asc,id:asc"}
        base |= EVERY_VISIBILITY | filters
        for hidden in [filters["os_hidden"]] if "os_hidden" in filters else HIDDEN_OR_NOT:
            yield from self._listing(base | {"os_hidden": hidden})

    def _listing(self, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        path: str | None = "/v2/images"
        for _ in range(MAX_PAGES):
            if path is None:
                return
            page = self._json("GET", path, call="GET images", params=params)
            yield from page.get("images", [])
            path, params = page.get("next"), {}
        log.warning("image listing stopped after %d pages", MAX_PAGES)

    def read_range(self, image_id: str, start: int, length: int, size: int) -> bytes:
        """`length` bytes of the image's data from `start` (one single-range GET; 206 expected).
        A range that reaches the end is asked as a suffix, `bytes=-N`."""
        if length <= 0:
            return b""
        end = start + length - 1
        header = f"bytes=-{length}" if end == size - 1 and start > 0 else f"bytes={start}-{end}"
        call = f"GET image {image_id} data {header}"
        response = self._request(
            "GET",
            f"/v2/images/{quote(image_id)}/file",
            call=call,
            headers={"Range": header},
            stream_limit=length,
        )
        data = response.content
        if response.status_code == httpx.codes.PARTIAL_CONTENT:
            got = CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if got is None or int(got.group(1)) != start:
                raise GlanceError(
                    response.status_code, call, f"unexpected Content-Range {got and got.group(0)!r}"
                )
        elif response.status_code == httpx.codes.OK and start == 0:
            data = data[:length]  # a server that ignores Range: we stopped reading at `length`
        else:
            raise ERRORS.get(response.status_code, GlanceError)(response.status_code, call, response.text)
        self.stats.range_requests += 1
        self.stats.data_bytes += len(data)
        return data

    # -- transport -------------------------------------------------------------------------------

    def _json(self, method: str, path: str, *, call: str, **kwargs: Any) -> dict[str, Any]:
        response = self._request(method, path, call=call, **kwargs)
        if response.status_code >= httpx.codes.BAD_REQUEST:
            raise ERRORS.get(response.status_code, GlanceError)(response.status_code, call, response.text)
        body: dict[str, Any] = response.json()
        return body

    def _request(
        self,
        method: str,
        path: str,
        *,
        call: str,
        headers: Mapping[str, str] | None = None,
        stream_limit: int | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One call, tried on the endpoints in turn; 4xx is an answer, not a failure."""
        failures: list[str] = []
        reauthenticated = False

        def once() -> httpx.Response:
            nonlocal reauthenticated
            url = self.endpoints.pick()
            try:
                request = self._http.build_request(
                    method, url + path, headers={**self.identity.headers(), **(headers or {})}, **kwargs
                )
                response = self._send(request, stream_limit)
            except httpx.TransportError as error:
                raise self._failed(url, failures, f"{url}: {type(error).__name__}: {error}") from error
            self.stats.requests[url] = self.stats.requests.get(url, 0) + 1
            if response.status_code >= httpx.codes.INTERNAL_SERVER_ERROR:
                reason = f"{url}: {response.status_code} {_glance_message(response.text)}"
                raise self._failed(url, failures, reason)
            if (
                response.status_code == httpx.codes.UNAUTHORIZED
                and not reauthenticated
                and self.identity.invalidate()
            ):
                reauthenticated = True
                raise _TryAgain("the token was renewed")
            if response.status_code == httpx.codes.UNAUTHORIZED:
                raise GlanceError(response.status_code, call, response.text + " (check the credentials)")
            return response

        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=self._backoff,
            retry=retry_if_exception_type(_TryAgain),
            sleep=time.sleep,
        )
        try:
            return retrying(once)
        except RetryError:
            raise GlanceUnavailable(
                f"{call}: no Glance endpoint answered after {self.attempts} tries: " + "; ".join(failures)
            ) from None

    def _send(self, request: httpx.Request, stream_limit: int | None) -> httpx.Response:
        """Send; with `stream_limit`, read at most that many body bytes (a range answered with
        the whole image must not download the whole image)."""
        if stream_limit is None:
            return self._http.send(request)
        response = self._http.send(request, stream=True)
        try:
            chunks: list[bytes] = []
            received = 0
            for chunk in response.iter_raw():
                chunks.append(chunk)
                received += len(chunk)
                if received >= stream_limit:
                    break
            body = b"".join(chunks)
        finally:
            response.close()
        return httpx.Response(response.status_code, headers=response.headers, content=body, request=request)

    def _failed(self, url: str, failures: list[str], reason: str) -> _TryAgain:
        """An endpoint failed: it cools down, and the call tries again."""
        failures.append(reason)
        self.endpoints.failed(url)
        self.stats.failovers += 1
        return _TryAgain(reason)

    def _backoff(self, state: RetryCallState) -> float:
        """BACKOFF while every endpoint cools down; no pause while one is up."""
        if len(self.endpoints.down()) < len(self.endpoints.urls):
            return 0.0
        return float(BACKOFF(state))


class _TryAgain(Exception):
    """One try failed in a way the next may not (an endpoint down, a token renewed)."""
