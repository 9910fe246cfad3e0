"""OMERO.web's JSON answers: the `@jsonp` decorator and the plain JavaScript responses some views
return instead (`omeroweb/webgateway/views.py:1426-1475`, `omeroweb/httprsp.py`).

`@jsonp` runs the view first. A view that returns an HttpResponse is answered as is (never wrapped);
a value becomes JSON, or `NAME(<the same JSON>)` as `application/javascript` when `callback=NAME`
is valid, else `400 Invalid callback` (the name is never echoed). Any exception raised inside the
view becomes JSON 500 `{"message", "stacktrace"}`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

VALID_JS_VARIABLE = re.compile(r"^[a-zA-Z_$][0-9a-zA-Z_$]*$")   # gw/views.py:109; `re.match`, as OMERO does


@dataclass(frozen=True)
class Jsonp:
    """How an endpoint answers `callback=`."""
    validate: bool              # OMERO.web checks the name; the microservice takes any
    template: str = "{}({})"


JSONP_WEB = Jsonp(validate=True)                         # OMERO.web's @jsonp
JSONP_MS = Jsonp(validate=False)                         # ms imgData (ImageRegionMicroserviceVerticle.java:801-805)
JSONP_MS_THUMBNAILS = Jsonp(validate=False, template="{}({});")   # ms getThumbnails (same file, l.961-964)


class JsonValue(Response):
    """A view's value as Django's JsonResponse bytes; a JSONP endpoint may wrap it in a callback."""

    def __init__(self, value: object, status: int = 200) -> None:
        self.value = value
        super().__init__(json.dumps(value), status_code=status, media_type="application/json")


class ViewError(Exception):
    """A Python exception OMERO's own view raises (`int("x")`, `None.simpleMarshal()`, …).

    Under @jsonp it is the JSON 500 OMERO sends; elsewhere the sim answers 400 with the message
    (Django would send its HTML 500)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def response(self, jsonp: bool) -> Response:
        if not jsonp:
            return Response(self.message, status_code=400, media_type="text/plain")
        trace = ("Traceback (most recent call last):\n"
                 '  File "omeroweb/webgateway/views.py", line 1443, in wrap\n'
                 "    rv = f(request, *args, **kwargs)\n"
                 f"{self.kind}: {self.message}\n")
        body = json.dumps({"message": self.message, "stacktrace": trace})
        return Response(body, status_code=500, media_type="application/json")   # never wrapped


def py_int(raw: str) -> int:
    """Python's int(), as Django views call it: its ValueError message is the one OMERO reports."""
    try:
        return int(raw)
    except ValueError as exc:
        raise ViewError("ValueError", str(exc)) from None


def not_marshallable() -> ViewError:
    """`conn.getObject(...)` was None and the view calls `.simpleMarshal()` on it."""
    return ViewError("AttributeError", "'NoneType' object has no attribute 'simpleMarshal'")


def javascript(body: str, status: int = 200) -> Response:
    """HttpJavascriptResponse."""
    return Response(body, status_code=status, media_type="application/javascript")


def javascript_error(body: str) -> Response:
    """HttpJavascriptResponseServerError: 500, `text/javascript` exactly (Django adds no charset)."""
    return Response(body, status_code=500, headers={"content-type": "text/javascript"})


def answer(request: Request, response: Response, mode: Jsonp | None) -> Response:
    """Wrap a view's value in the request's callback, as the endpoint's JSONP mode says."""
    if mode is None or not isinstance(response, JsonValue) or "callback" not in request.query_params:
        return response
    name = request.query_params["callback"]     # the last one, as Django's QueryDict.get
    if mode.validate and not VALID_JS_VARIABLE.match(name):
        return HTMLResponse("Invalid callback", status_code=400)
    return javascript(mode.template.format(name, response.body.decode()), response.status_code)
