"""A small Glance v2 client: only the calls introspect makes, with failover.

Every call goes through one keystoneauth1 session, so the TLS settings (the CA bundle, no
verification, a client certificate) apply to each of them as they do to keystone. With keystone
(workers/glance/cloud.py reads the cloud as openstacksdk does) the session puts a token on each
request and renews it once on a 401; the image endpoint comes from the catalog unless configured.
Without it, a session with no auth plugin carries fixed identity headers for a keystone-less
Glance (see settings.py). One request per try: the session retries nothing itself, follows no
redirect, and reads a range's body only as far as asked.

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
     ├── GlanceConfigError      the settings are wrong: no endpoint, no such cloud, a certificate
     │                          we cannot verify, credentials keystone refuses (one line each)
     └── Transient
          └── GlanceUnavailable no endpoint answered (connection errors, timeouts, 5xx), or
                                keystone did not
"""

from __future__ import annotations

import html
import json
import logging
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import quote

import requests
import urllib3
from keystoneauth1 import exceptions as ksa_exceptions
from keystoneauth1.session import Session
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
from workers.glance.cloud import GlanceConfigError, load_cloud
from workers.glance.refs import ImageRef, ImageRefError, normalize_endpoint
from workers.glance.settings import GlanceSettings

#: GlanceConfigError is cloud.py's (which knows nothing of the client); the client's errors are
#: all to be found here.
__all__ = [
    "Conflict", "Endpoints", "Forbidden", "GlanceClient", "GlanceConfigError", "GlanceError",
    "GlanceUnavailable", "HeaderIdentity", "Identity", "ImageGone", "KeystoneIdentity",
    "QuotaExceeded", "Stats",
]  # fmt: skip

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
#: Bytes asked of the socket at a time while a range's body is read.
READ_CHUNK = 64 * 1024
#: Why OpenSSL refused a server's certificate, in keystoneauth1's message of the failure.
CERT_VERIFY_FAILED = re.compile(r"certificate verify failed: ([^(']+)")
#: The operating system's reason inside urllib3's message of a failed connection.
ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")]+")
#: The URL keystoneauth1 names in its message of a failed request.
URL_IN_MESSAGE = re.compile(r"(https?://\S+?):?\s")
URL_OF_FAILURE = re.compile(r"connecting to (https?://[^/\s:]+(?::\d+)?)")
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
    """Who we are to Glance, and the keystoneauth1 session every call goes through: its TLS
    settings (verify, client certificate) and, with keystone, the token it puts on each request."""

    session: Session
    #: True when the session's auth plugin adds a token (and renews it once on a 401).
    authenticated: bool

    def headers(self) -> dict[str, str]:
        """Headers of every request besides the session's own."""
        ...

    def endpoint(self) -> str | None:
        """The image API's URL when the identity knows it (the catalog), else None."""
        ...


class HeaderIdentity:
    """Keystone-less: the identity keystonemiddleware would have put in the headers, stated, over
    a session without an auth plugin (so TLS settings still apply)."""

    authenticated = False

    def __init__(
        self, roles: Sequence[str], project_id: str, user_id: str, *, verify: bool | str = True
    ) -> None:
        self.roles = tuple(roles)
        self.project_id = project_id
        self.user_id = user_id
        self.session = Session(verify=verify)
        if verify is False:
            # asked for (INTROSPECT_GLANCE_INSECURE): not a warning on every request, as
            # openstacksdk's session does with `insecure`
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)

    def headers(self) -> dict[str, str]:
        return {
            "X-Identity-Status": "Confirmed",
            "X-Roles": ",".join(self.roles),
            "X-Project-Id": self.project_id,
            "X-User-Id": self.user_id,
        }

    def endpoint(self) -> str | None:
        return None


class KeystoneIdentity:
    """A cloud's keystoneauth1 session (workers/glance/cloud.py loads it): a token per request,
    the image endpoint from the catalog, unless the cloud overrides it."""

    authenticated = True

    @classmethod
    def from_settings(cls, settings: GlanceSettings) -> KeystoneIdentity:
        cloud = load_cloud(settings)
        return cls(
            cloud.session,
            interface=cloud.interface,
            region_name=cloud.region_name,
            endpoint_override=cloud.endpoint_override,
        )

    def __init__(
        self,
        session: Session,
        *,
        interface: str | list[str] | None,
        region_name: str | None,
        endpoint_override: str | None = None,
    ) -> None:
        self.session = session
        self.interface = interface
        self.region_name = region_name
        self.endpoint_override = endpoint_override

    def headers(self) -> dict[str, str]:
        return {}

    def endpoint(self) -> str | None:
        if self.endpoint_override:
            return self.endpoint_override
        try:
            found = self.session.get_endpoint(
                service_type="image", interface=self.interface, region_name=self.region_name
            )
        except ksa_exceptions.EndpointNotFound:
            found = None
        except ksa_exceptions.ClientException as error:
            raise keystone_failure(error) from None
        if not found:
            raise GlanceConfigError(
                f"keystone's catalog has no image endpoint for interface {self.interface or 'public'} "
                f"in region {self.region_name or '(any)'}: choose them with the cloud's interface and "
                "region_name (or INTROSPECT_GLANCE_INTERFACE, _REGION_NAME), or name the API with "
                "INTROSPECT_GLANCE_ENDPOINTS"
            )
        return str(found)


def keystone_failure(error: ksa_exceptions.ClientException) -> PipelineError:
    """What keystone's failure to hand us a token (or the catalog) means: a certificate we do not
    trust or refused credentials are the operator's to fix; keystone out of reach may pass."""
    if isinstance(error, ksa_exceptions.SSLError):
        return tls_failure(error)
    if isinstance(error, ksa_exceptions.ConnectionError | ksa_exceptions.HttpServerError):
        where = URL_IN_MESSAGE.search(str(error))
        return GlanceUnavailable(
            f"keystone did not answer{f' at {where.group(1)}' if where else ''}: {_why(error)}"
        )
    return GlanceConfigError(f"keystone refused us: {error} (check the credentials)")


def tls_failure(error: ksa_exceptions.SSLError) -> PipelineError:
    """A server certificate we cannot verify is a setting to fix, said in one line; any other TLS
    failure (a handshake cut short) is a failed try."""
    reason = CERT_VERIFY_FAILED.search(str(error))
    if reason is None:
        return GlanceUnavailable(str(error))
    url = URL_OF_FAILURE.search(str(error))
    return GlanceConfigError(
        f"{url.group(1) if url else 'the server'}: TLS certificate verify failed "
        f"({reason.group(1).strip()}): give the CA that signed it as `cacert` in clouds.yaml or "
        "OS_CACERT (INTROSPECT_GLANCE_CACERT without keystone)"
    )


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


@dataclass(frozen=True)
class Answer:
    """What Glance said to one request: its status, headers and (at most the asked-for) body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class GlanceClient:
    """The calls introspect makes on the image API v2, each with failover."""

    def __init__(
        self,
        endpoints: Sequence[str],
        identity: Identity,
        *,
        cooldown: float = 30.0,
        attempts: int = 4,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ) -> None:
        if not endpoints:
            raise GlanceConfigError(
                "no Glance endpoint: set INTROSPECT_GLANCE_ENDPOINTS=http://host:9292 (comma-separated "
                "for several), or OS_CLOUD / OS_AUTH_URL to find it in the keystone catalog"
            )
        self.endpoints = Endpoints([normalize_endpoint(url) for url in endpoints], cooldown)
        self.identity = identity
        self.attempts = max(attempts, 1)
        self.timeout = (connect_timeout, read_timeout)
        self.stats = Stats()

    @classmethod
    def from_settings(cls, settings: GlanceSettings) -> GlanceClient:
        """The client the settings describe: keystone through openstacksdk's config (the image
        endpoint from the catalog unless INTROSPECT_GLANCE_ENDPOINTS names it), or headers."""
        identity: Identity
        if settings.uses_keystone:
            identity = KeystoneIdentity.from_settings(settings)
        else:
            identity = HeaderIdentity(
                settings.roles, settings.project_id, settings.user_id, verify=settings.verify
            )
        endpoints = list(settings.endpoints)
        if not endpoints:
            discovered = identity.endpoint()
            endpoints = [discovered] if discovered else []
        return cls(
            endpoints,
            identity,
            cooldown=settings.cooldown,
            attempts=settings.attempts,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
        )

    @property
    def session(self) -> Session:
        """The keystoneauth1 session every call goes through."""
        return self.identity.session

    def close(self) -> None:
        self.session.session.close()

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
            data=json.dumps(list(ops)).encode(),
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
        answer = self._request(
            "GET",
            f"/v2/images/{quote(image_id)}/file",
            call=call,
            headers={"Range": header},
            stream_limit=length,
        )
        data = answer.body
        if answer.status == HTTPStatus.PARTIAL_CONTENT:
            got = CONTENT_RANGE.match(answer.headers.get("Content-Range", ""))
            if got is None or int(got.group(1)) != start:
                raise GlanceError(answer.status, call, f"unexpected Content-Range {got and got.group(0)!r}")
        elif answer.status == HTTPStatus.OK and start == 0:
            data = data[:length]  # a server that ignores Range: we stopped reading at `length`
        else:
            raise ERRORS.get(answer.status, GlanceError)(answer.status, call, answer.text)
        self.stats.range_requests += 1
        self.stats.data_bytes += len(data)
        return data

    # -- transport -------------------------------------------------------------------------------

    def _json(self, method: str, path: str, *, call: str, **kwargs: Any) -> dict[str, Any]:
        answer = self._request(method, path, call=call, **kwargs)
        if answer.status >= HTTPStatus.MULTIPLE_CHOICES:
            text = answer.text
            if answer.status < HTTPStatus.BAD_REQUEST:
                text = f"a redirect to {answer.headers.get('Location')!r}, not followed"
            raise ERRORS.get(answer.status, GlanceError)(answer.status, call, text)
        try:
            body: dict[str, Any] = json.loads(answer.body)
        except ValueError:
            raise GlanceError(answer.status, call, f"not JSON: {answer.text}") from None
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
    ) -> Answer:
        """One call, tried on the endpoints in turn; 4xx is an answer, not a failure. The session
        sends it: TLS as configured, the token (renewed once on a 401), no retries of its own,
        no redirect followed."""
        failures: list[str] = []

        def once() -> Answer:
            if self.identity.authenticated:
                self._token()
            url = self.endpoints.pick()
            try:
                answer = self._send(
                    method, url + path, headers={**self.identity.headers(), **(headers or {})},
                    stream_limit=stream_limit, **kwargs,
                )  # fmt: skip
            except ksa_exceptions.SSLError as error:
                failure = tls_failure(error)
                if isinstance(failure, GlanceConfigError):
                    raise failure from None
                raise self._failed(url, failures, f"{url}: {error}") from error
            except (ksa_exceptions.ConnectionError, requests.RequestException) as error:
                raise self._failed(url, failures, f"{url}: {_why(error)}") from error
            self.stats.requests[url] = self.stats.requests.get(url, 0) + 1
            if answer.status >= HTTPStatus.INTERNAL_SERVER_ERROR:
                raise self._failed(url, failures, f"{url}: {answer.status} {_glance_message(answer.text)}")
            if answer.status == HTTPStatus.UNAUTHORIZED:
                raise GlanceError(answer.status, call, answer.text + " (check the credentials)")
            return answer

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

    def _token(self) -> None:
        """Have a token before a Glance endpoint is tried, so that keystone's failures are
        keystone's (a certificate, the credentials, keystone down), never blamed on Glance."""
        try:
            self.session.get_auth_headers()
        except ksa_exceptions.ClientException as error:
            raise keystone_failure(error) from None

    def _send(
        self, method: str, url: str, *, headers: Mapping[str, str], stream_limit: int | None, **kwargs: Any
    ) -> Answer:
        """Send through the session; with `stream_limit`, read at most that many body bytes (a
        range answered with the whole image must not download the whole image)."""
        response = self.session.request(
            url,
            method,
            headers=dict(headers),
            authenticated=self.identity.authenticated,
            raise_exc=False,
            redirect=False,
            connect_retries=0,
            timeout=self.timeout,
            stream=stream_limit is not None,
            **kwargs,
        )
        try:
            if stream_limit is None:
                body = response.content
            else:
                chunks: list[bytes] = []
                received = 0
                for chunk in response.iter_content(chunk_size=min(stream_limit, READ_CHUNK)):
                    chunks.append(chunk)
                    received += len(chunk)
                    if received >= stream_limit:
                        break
                body = b"".join(chunks)
        finally:
            response.close()
        return Answer(response.status_code, response.headers, body)

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


def _why(error: Exception) -> str:
    """A connection failure's kind and its root (`[Errno 111] Connection refused`), without the
    layers of urllib3's wrapping around it."""
    root = ERRNO.search(str(error))
    return f"{type(error).__name__}: {root.group(0).strip() if root else error}"


class _TryAgain(Exception):
    """One try failed in a way the next may not (an endpoint down)."""
