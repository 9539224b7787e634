"""The web UI: a Starlette app over the graph API, as thin as the CLI. Each page calls the same one to three API
functions as the matching command, renders them with an autoescaped Jinja2 template, and has a JSON twin (the
page's path with `.json`, or `?format=json`) holding what the command's `--json` prints.

Pages: `/` (counts; claims and findings with status), `/nodes`, `/node/<id>` (the claim page), `/node/<id>/graph`
(neighbourhood as SVG), `/search`, `/suggestions` (accept / reject), `/experiments`, `/runs`, `/run/<id>`
(status, log tail, plots), `/run/<id>/feature/<n>` (feature page). Form posts carry a token tied to a cookie
(and are refused from another origin); requests whose Host header is not this server's are refused (DNS
rebinding); pages forbid framing and inline scripts (Content-Security-Policy). Store access: `access.py`;
experiments and run folders: `runs.py`.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from claimgraph.cli.pages import PLURAL, neighbour_groups, page_json, paper_line
from claimgraph.cli.render import to_jsonable
from claimgraph.graph.errors import ClaimgraphError, InvalidInput, NotFound, StoreBusy
from claimgraph.graph.models import EdgeType, NodeType, parse_node_type

from . import runs as exp
from .access import StoreAccess
from .graphview import layout

HERE = Path(__file__).resolve().parent
CSRF_COOKIE = "claimgraph_csrf"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; img-src 'self' data:; style-src 'self'; "
                                 b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class Settings:
    """What one server instance serves and who it answers: the store, its own host names and port."""

    def __init__(self, db: str | Path, *, host: str = "127.0.0.1", port: int = 8000,
                 allow_hosts: Iterable[str] = (), busy_timeout: float | None = None, secret: bytes | None = None):
        self.db = Path(db)
        self.host, self.port = host, port
        names = {h.lower().strip("[]") for h in allow_hosts}
        if host in ("0.0.0.0", "::", ""):
            names.update(LOOPBACK)  # all interfaces: loopback names plus what --allow-host adds
        else:
            names.add(host.lower().strip("[]"))
            if host in LOOPBACK or host.startswith("127."):
                names.update(LOOPBACK)
        self.allowed_hosts = frozenset(names)
        self.busy_timeout = busy_timeout
        self.secret = secret or secrets.token_bytes(32)


def _host_ok(header: str, settings: Settings) -> bool:
    """Host header `name[:port]` names this server: an allowed name, and this port (or none given)."""
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8000
        name, _, rest = header[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = header.partition(":")
    if name not in settings.allowed_hosts:
        return False
    return port == "" or port == str(settings.port)


class Guard:
    """ASGI middleware: refuse foreign Host headers, give each browser a CSRF cookie, add security headers."""

    def __init__(self, app: Any, settings: Settings):
        self.app, self.settings = app, settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if not _host_ok(host, self.settings):
            resp = PlainTextResponse(f"Error: this server does not answer for host {host!r}; open it at "
                                     f"http://{self.settings.host}:{self.settings.port}/", status_code=400)
            return await resp(scope, receive, send)
        nonce = _cookie(headers.get("cookie", ""), CSRF_COOKIE)
        fresh = nonce is None or len(nonce) != 32 or not all(c in "0123456789abcdef" for c in nonce)
        if fresh:
            nonce = secrets.token_hex(16)
        scope.setdefault("state", {})["csrf_nonce"] = nonce

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                extra = list(SECURITY_HEADERS)
                if fresh:
                    extra.append((b"set-cookie", f"{CSRF_COOKIE}={nonce}; Path=/; HttpOnly; SameSite=Strict"
                                  .encode("latin-1")))
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    return None


def csrf_token(request: Request, settings: Settings) -> str:
    """The form token for this browser: an HMAC of its cookie's nonce under the server's secret."""
    return hmac.new(settings.secret, request.state.csrf_nonce.encode(), hashlib.sha256).hexdigest()


def check_post(request: Request, form: Any, settings: Settings) -> None:
    """Refuse a form post that did not come from one of this server's pages."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        if not _host_ok(urlsplit(origin).netloc, settings):
            raise Forbidden(f"form posted from another site ({origin}); nothing was written")
    sent = str(form.get("csrf", ""))
    if not hmac.compare_digest(sent, csrf_token(request, settings)):
        raise Forbidden("the form's token is missing or stale (reload the page and try again); nothing was written")


class Forbidden(ClaimgraphError):
    """A form post without a valid token, or from another site."""


def _status_for(e: ClaimgraphError) -> int:
    if isinstance(e, Forbidden):
        return 403
    if isinstance(e, NotFound):
        return 404
    if isinstance(e, StoreBusy):
        return 503
    return 400 if e.exit_code == 2 else 500


def wants_json(request: Request) -> bool:
    return request.url.path.endswith(".json") or request.query_params.get("format") == "json"


def json_url(request: Request) -> str:
    path = request.url.path
    if not path.endswith(".json"):
        path = "/index.json" if path == "/" else path + ".json"
    return path + (f"?{request.url.query}" if request.url.query else "")


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return (json.dumps(to_jsonable(content), ensure_ascii=False, indent=1, default=str) + "\n").encode("utf-8")


def _number(request: Request, name: str, default: Any, lo: Any, hi: Any, cast: type = int) -> Any:
    """Query parameter `name` as a number in [lo, hi] (`default` when absent); InvalidInput says what is wrong."""
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        v = cast(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be {'a whole number' if cast is int else 'a number'}, got {raw!r}") from None
    if not lo <= v <= hi:
        raise InvalidInput(f"{name} must be between {lo:g} and {hi:g}, got {v:g}")
    return v


def _int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    return _number(request, name, default, lo, hi, int)


def _float(request: Request, name: str, default: float, lo: float, hi: float) -> float:
    return _number(request, name, default, lo, hi, float)


def _type(request: Request) -> NodeType | None:
    return parse_node_type(request.query_params.get("type") or None)


def _local(target: str | None, default: str) -> str:
    """A redirect target on this server only (a path, never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def edge_choices(src_type: NodeType | None, dst_type: NodeType | None) -> list[dict[str, str]]:
    """Edge types a suggested pair (a, b) may become, each way round the store's edge rules allow."""
    from claimgraph.ingest.builder import edge_allowed

    out: list[dict[str, str]] = []
    if src_type is None or dst_type is None:
        return out
    for et in EdgeType:
        if edge_allowed(et, src_type, dst_type):
            out.append({"value": f"{et.value}:ab", "label": f"A —{et.value}→ B"})
        if et not in (EdgeType.associated_with, EdgeType.duplicate_of, EdgeType.compared_with) \
                and edge_allowed(et, dst_type, src_type):
            out.append({"value": f"{et.value}:ba", "label": f"B —{et.value}→ A"})
    return out


def create_app(settings: Settings) -> Starlette:
    """The app serving `settings.db`."""
    access = StoreAccess(settings.db, busy_timeout=settings.busy_timeout)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["paper_line"] = paper_line
    env.filters["num"] = lambda v, fmt=".3g": "" if v is None else format(v, fmt)
    env.filters["visible"] = exp.visible_token
    env.globals.update(PLURAL=PLURAL, NODE_TYPES=[t.value for t in NodeType])
    templates = Jinja2Templates(env=env)
    encoder_ready = threading.Event()

    def render(request: Request, name: str, data: Any, ctx: dict[str, Any] | None = None, status: int = 200) -> Response:
        if wants_json(request):
            return JSON(data, status_code=status)
        context = {"data": data, "json_url": json_url(request), "csrf": csrf_token(request, settings),
                   "msg": request.query_params.get("msg"), "db": str(settings.db), "here": _here(request),
                   **(ctx or {})}
        return templates.TemplateResponse(request, name, context, status_code=status)

    def handles(fn: Callable) -> Callable:
        """Expected failures become a page (or JSON) with the message and a fitting status."""
        async def endpoint(request: Request) -> Response:
            try:
                if getattr(fn, "is_async", False):
                    return await fn(request)
                return await run_in_threadpool(fn, request)
            except ClaimgraphError as e:
                status = _status_for(e)
                if wants_json(request):
                    return JSON({"error": str(e)}, status_code=status)
                return templates.TemplateResponse(request, "error.html", {
                    "message": str(e), "status": status, "json_url": None, "csrf": csrf_token(request, settings),
                    "msg": None, "db": str(settings.db), "here": _here(request)}, status_code=status)
        endpoint.__name__ = fn.__name__
        return endpoint

    def async_(fn: Callable) -> Callable:
        fn.is_async = True  # type: ignore[attr-defined]
        return fn

    # -- pages ------------------------------------------------------------------------------------
    def home(request: Request) -> Response:
        from claimgraph.graph.queries import list_rows

        with access.read() as s:
            counts, edges = s.count_nodes(), s.count_edges()
            nodes = s.list_nodes(NodeType.claim) + s.list_nodes(NodeType.finding)
            rows = list_rows(s, nodes, stale=exp.stale_check())
        data = {"db": str(settings.db), "nodes": counts, "edges": edges, "claims": rows}
        return render(request, "home.html", data)

    def list_page(request: Request) -> Response:
        from claimgraph.graph.queries import list_rows

        ntype = _type(request)
        limit = _int(request, "limit", 500, 1, 100_000)
        with access.read() as s:
            nodes = s.list_nodes(ntype, limit=limit)
            data = {"nodes": list_rows(s, nodes, stale=exp.stale_check())}
        return render(request, "nodes.html", data, {"type": ntype.value if ntype else "", "limit": limit})

    def node(request: Request) -> Response:
        from claimgraph.graph.embed import MODEL_NAME
        from claimgraph.graph.queries import node_page
        from claimgraph.graph.search import vector_matrix

        nid = request.path_params["node_id"]
        if nid.endswith(".json"):
            nid = nid[: -len(".json")]
        k = _int(request, "k", 8, 0, 100)
        threshold = _float(request, "threshold", 0.65, -1.0, 1.0)
        with access.read() as s:
            vector_matrix(s, MODEL_NAME)  # kept in this process: similar entries by one product, not a scan
            page = node_page(s, nid, k_similar=k, threshold=threshold, stale=exp.stale_check())
            runs = exp.with_folder_status(s.runs(nid)) if page.node.type == NodeType.experiment else []
            ev_runs = {r["run_id"] for e in page.evidence if e.attrs.get("run_id")
                       for r in s.runs(run_id=e.attrs["run_id"])}
            own_run = s.runs(run_id=page.node.attrs["run_id"]) if page.node.type == NodeType.evidence \
                and page.node.attrs.get("run_id") else []
        data = page_json(page)
        if page.node.type == NodeType.experiment:
            data["runs"] = runs
        evidence = [{"node": e, "decision": e.attrs.get("decision") or {}, "verdict": e.attrs.get("verdict"),
                     "criterion": exp.criterion_text(e.attrs.get("criterion")), "run_id": e.attrs.get("run_id"),
                     "run_known": e.attrs.get("run_id") in ev_runs, "experiment": e.attrs.get("experiment"),
                     "stale": page.stale.get(e.id)}
                    for e in page.evidence]
        ctx = {"page": page, "groups": neighbour_groups(page), "evidence": evidence, "runs": runs,
               "own_run": own_run[0] if own_run else None, "k": k, "threshold": threshold,
               "spec_criterion": exp.criterion_text((page.node.attrs.get("spec") or {}).get("criterion"))
               if page.node.type == NodeType.experiment else "",
               "node_criterion": exp.criterion_text(page.node.attrs.get("criterion"))
               if page.node.type == NodeType.evidence else ""}
        return render(request, "node.html", data, ctx)

    def graph(request: Request) -> Response:
        from claimgraph.graph.queries import neighborhood

        nid = request.path_params["node_id"]
        depth = _int(request, "depth", 1, 1, 2)
        with access.read() as s:
            hops = neighborhood(s, nid, depth=depth)
        data = {"nodes": hops}
        return render(request, "graph.html", data, {"node_id": nid, "depth": depth, "view": layout(hops)})

    def search(request: Request) -> Response:
        from claimgraph.graph.embed import get_embedder
        from claimgraph.graph.search import search as do_search

        q = (request.query_params.get("q") or "").strip()
        ntype = _type(request)
        k = _int(request, "k", 20, 1, 200)
        results: list[Any] = []
        if q:
            embedder = get_embedder()
            if not encoder_ready.is_set():  # load the encoder before taking the store, not while holding it
                embedder.encode(["warm up"], progress=False)
                encoder_ready.set()
            with access.read() as s:
                results = do_search(s, q, type=ntype, k=k, embedder=embedder)
        data = {"results": [{"id": r.id, "type": r.type.value, "title": r.title, "score": r.score,
                             "semantic": r.semantic, "keyword": r.keyword} for r in results]}
        return render(request, "search.html", data, {"q": q, "type": ntype.value if ntype else "", "k": k})

    def suggestions(request: Request) -> Response:
        ntype = _type(request)
        limit = _int(request, "limit", 100, 1, 10_000)
        with access.read() as s:
            found = _suggestions(s, ntype, limit)
        data = {"suggestions": [_suggestion_json(x) for x in found]}
        rows = [{"s": x, "choices": edge_choices(x.src_type, x.dst_type),
                 "default": ("duplicate_of" if x.duplicate and x.src_type == x.dst_type else "associated_with") + ":ab"}
                for x in found]
        return render(request, "suggestions.html", data,
                      {"rows": rows, "type": ntype.value if ntype else "", "limit": limit})

    @async_
    async def suggestions_compute(request: Request) -> Response:
        form = await request.form()
        check_post(request, form, settings)
        try:
            threshold = float(str(form.get("threshold") or 0.65))
        except ValueError:
            raise InvalidInput(f"threshold must be a number, got {form.get('threshold')!r}") from None
        ntype = parse_node_type(str(form.get("type") or "") or None)

        def work():
            from claimgraph.graph.similarity import suggest

            with access.write() as s:
                return suggest(s, threshold=threshold, type=ntype, progress=False)

        found = await run_in_threadpool(work)
        if wants_json(request):
            return JSON({"suggestions": [_suggestion_json(x) for x in found]})
        q = {"msg": f"{len(found)} open suggestion(s) at cosine ≥ {threshold:g}"}
        if ntype:
            q["type"] = ntype.value
        return RedirectResponse("/suggestions?" + urlencode(q), status_code=303)

    @async_
    async def accept(request: Request) -> Response:
        form = await request.form()
        check_post(request, form, settings)
        a, b = str(form.get("a") or ""), str(form.get("b") or "")
        choice = str(form.get("edge") or "")
        edge, _, way = choice.partition(":")
        if not a or not b or way not in ("ab", "ba", ""):
            raise InvalidInput("an accept names the pair (a, b) and an edge type such as supports:ab")
        src, dst = (b, a) if way == "ba" else (a, b)

        def work():
            from claimgraph.graph.similarity import accept as do_accept

            with access.write() as s:
                return do_accept(s, src, dst, edge=edge or None)

        e = await run_in_threadpool(work)
        if wants_json(request):
            return JSON({"edge": e})
        msg = f"added {e.src} -{e.type.value}-> {e.dst}"
        return RedirectResponse(_with_msg(_local(str(form.get("next") or ""), "/suggestions"), msg), status_code=303)

    @async_
    async def reject(request: Request) -> Response:
        form = await request.form()
        check_post(request, form, settings)
        a, b = str(form.get("a") or ""), str(form.get("b") or "")
        if not a or not b:
            raise InvalidInput("a reject names the pair (a, b)")

        def work():
            from claimgraph.graph.similarity import reject as do_reject

            with access.write() as s:
                do_reject(s, a, b)

        await run_in_threadpool(work)
        if wants_json(request):
            return JSON({"rejected": {"src": a, "dst": b}})
        msg = f"rejected {a} ~ {b}"
        return RedirectResponse(_with_msg(_local(str(form.get("next") or ""), "/suggestions"), msg), status_code=303)

    def experiments(request: Request) -> Response:
        with access.read() as s:
            rows = exp.experiments(s)
        return render(request, "experiments.html", {"experiments": rows})

    def runs_page(request: Request) -> Response:
        experiment = request.query_params.get("experiment") or None
        with access.read() as s:
            rows = s.runs(experiment)
        return render(request, "runs.html", {"runs": exp.with_folder_status(rows)}, {"experiment": experiment or ""})

    def run(request: Request) -> Response:
        rid = request.path_params["run_id"]
        if rid.endswith(".json"):
            rid = rid[: -len(".json")]
        with access.read() as s:
            row = exp.run_row(s, rid)
        view = exp.run_view(row)
        return render(request, "run.html", view)

    run_dirs: dict[str, dict[str, Any]] = {}  # run id -> its record's id and folder (a run's folder never moves)

    def run_file(request: Request) -> Response:
        rid = request.path_params["run_id"]
        if rid not in run_dirs:
            with access.read() as s:
                row = exp.run_row(s, rid)
            run_dirs[rid] = {"run_id": rid, "run_dir": row["run_dir"]}
        return FileResponse(exp.run_file(run_dirs[rid], request.path_params["path"]))

    def feature(request: Request) -> Response:
        rid = request.path_params["run_id"]
        raw = request.path_params["feature"]
        if raw.endswith(".json"):
            raw = raw[: -len(".json")]
        try:
            n = int(raw)
        except ValueError:
            raise InvalidInput(f"feature must be a latent index, got {raw!r}") from None
        seed_raw = request.query_params.get("seed")
        seed = _int(request, "seed", 0, 0, 2**31) if seed_raw not in (None, "") else None
        condition = request.query_params.get("condition") or None
        page = exp.feature_page(access, rid, n, seed=seed, condition=condition)
        ctx = {"page": page, "images": exp.feature_images(page),
               "related": [{"r": r, "images": exp.related_images(r)} for r in page.related]}
        return render(request, "feature.html", page, ctx)

    def feature_form(request: Request) -> Response:
        """The run page's latent form (a GET without scripts) lands on the feature's stable link."""
        n = _int(request, "feature", 0, 0, 2**31)
        q = {k: v for k in ("seed", "condition") if (v := request.query_params.get(k))}
        target = f"/run/{request.path_params['run_id']}/feature/{n}" + (f"?{urlencode(q)}" if q else "")
        return RedirectResponse(target, status_code=303)

    routes = [
        Route("/", handles(home)), Route("/index.json", handles(home)),
        Route("/nodes", handles(list_page)), Route("/nodes.json", handles(list_page)),
        Route("/node/{node_id}/graph", handles(graph)), Route("/node/{node_id}/graph.json", handles(graph)),
        Route("/node/{node_id}", handles(node)),
        Route("/search", handles(search)), Route("/search.json", handles(search)),
        Route("/suggestions", handles(suggestions)), Route("/suggestions.json", handles(suggestions)),
        Route("/suggestions/compute", handles(suggestions_compute), methods=["POST"]),
        Route("/suggestions/compute.json", handles(suggestions_compute), methods=["POST"]),
        Route("/suggestions/accept", handles(accept), methods=["POST"]),
        Route("/suggestions/accept.json", handles(accept), methods=["POST"]),
        Route("/suggestions/reject", handles(reject), methods=["POST"]),
        Route("/suggestions/reject.json", handles(reject), methods=["POST"]),
        Route("/experiments", handles(experiments)), Route("/experiments.json", handles(experiments)),
        Route("/runs", handles(runs_page)), Route("/runs.json", handles(runs_page)),
        Route("/run/{run_id}/file/{path:path}", handles(run_file)),
        Route("/run/{run_id}/feature", handles(feature_form)),
        Route("/run/{run_id}/feature/{feature}", handles(feature)),
        Route("/run/{run_id}", handles(run)),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.access = access
    app.state.settings = settings
    app.add_middleware(Guard, settings=settings)
    return app


def _here(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def _with_msg(path: str, msg: str) -> str:
    base, _, query = path.partition("?")
    parts = [p for p in query.split("&") if p and not p.startswith("msg=")]
    parts.append(urlencode({"msg": msg}))
    return base + "?" + "&".join(parts)


def _suggestions(store: Any, ntype: NodeType | None, limit: int | None) -> list[Any]:
    from claimgraph.graph.similarity import suggestions

    return suggestions(store, state="open", type=ntype, limit=limit)


def _suggestion_json(x: Any) -> dict[str, Any]:
    """A row of `suggest --json`."""
    return {"src": x.src, "dst": x.dst, "score": x.score, "duplicate": x.duplicate,
            "src_type": x.src_type.value if x.src_type else None, "dst_type": x.dst_type.value if x.dst_type else None,
            "src_title": x.src_title, "dst_title": x.dst_title}
