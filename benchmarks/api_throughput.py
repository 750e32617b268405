"""Answer API throughput: requests per second and latency percentiles (p50, p95) of `niftytune api`
with 1 and with 8 concurrent clients, each with batching off (--max-batch 1) and on (8). Figures go
to docs/PERFORMANCE.md ("Answer API").

    # 1. a home with market data (synthetic, offline, as of 2026-11-19); no champion: the base model answers
    .venv/bin/python benchmarks/api_throughput.py prepare --home .bench/api
    #    for a champion instead (minutes on a CPU; the gate decides whether it is promoted):
    .venv/bin/niftytune run --home .bench/api --source synthetic --profile cpu --as-of 2026-11-19
    # 2. measure; the server is `niftytune api` in a child process, the clients are threads here
    .venv/bin/python benchmarks/api_throughput.py run --home .bench/api --device cpu
    # on a GPU machine (no Prefect needed: the server is tasks.answering.api.run_api)
    python benchmarks/api_throughput.py run --home .bench/api --device cuda --json $OUT/api.json

Every request is a grounded question about a different ticker of the synthetic universe (non-streamed,
`max_tokens` 64 unless --max-tokens says otherwise), so each one reads the store and is answered by
the model; refusals, which call no model, are not asked. Latency is from sending the request to
reading the whole answer.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

AS_OF = "2026-11-19"
QUESTIONS = ["What did NIFTY 50 close at?", "How did TCS do?", "What was the day's high of Reliance?",
             "What is the trend of HDFC Bank?", "How much did Infosys move?", "What did ICICI Bank close at?",
             "Where did SENSEX close?", "What was the volume of TCS?"]
"""No day named: each is about the store's latest session (a day the store lacks would be refused)."""


def prepare(home: Path) -> None:
    """The market store as `niftytune fetch` writes it (synthetic source, offline)."""
    cmd = [str(Path(sys.executable).with_name("niftytune")), "fetch", "--home", str(home), "--source", "synthetic",
           "--as-of", AS_OF, "--profile", "cpu"]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(home / "prefect", ignore_errors=True)


def serve(argv: list[str]) -> None:
    """What `niftytune api` runs (`tasks.answering.api.run_api`: no Prefect, which a GPU host may lack)."""
    from tasks.answering.api import run_api

    parser = argparse.ArgumentParser(prog="api_throughput.py serve")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-batch", type=int, required=True)
    args = parser.parse_args(argv)
    run_api(args.home, host="127.0.0.1", port=args.port, token=None, poll_seconds=2.0, max_batch=args.max_batch)


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=1800) as response:
        return json.loads(response.read())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(home: Path, device: str, max_batch: int, log: Path) -> tuple[subprocess.Popen, str, dict]:
    """The server, once /health answers (the model is loaded by then)."""
    port = _free_port()
    env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {})}
    cmd = [sys.executable, __file__, "serve", "--home", str(home), "--port", str(port), "--max-batch", str(max_batch)]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"niftytune api exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                health = json.loads(response.read())
            break
        except OSError:
            time.sleep(0.5)
    if not health["device"].startswith(device):
        proc.terminate()
        raise SystemExit(f"asked for --device {device}, but the server runs on {health['device']}")
    return proc, url, health


def measure(url: str, clients: int, per_client: int, max_tokens: int) -> dict[str, Any]:
    """`clients` threads, each asking `per_client` questions one after the other."""
    latencies: list[float] = []
    lengths: list[int] = []

    def client(k: int) -> None:
        for i in range(per_client):
            body = {"model": "niftytune-champion", "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": QUESTIONS[(k + i * clients) % len(QUESTIONS)]}]}
            start = time.perf_counter()
            answer = _post(f"{url}/v1/chat/completions", body)
            latencies.append(time.perf_counter() - start)
            if answer["niftytune"]["refused"]:
                raise SystemExit(f"refused, so no model was called: {body['messages'][0]['content']!r}")
            lengths.append(len(answer["choices"][0]["message"]["content"]))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"clients": clients, "requests": len(latencies), "wall_s": round(wall, 2),
            "requests_per_s": round(len(latencies) / wall, 4), "p50_s": round(cuts[49], 2),
            "p95_s": round(cuts[94], 2), "mean_answer_chars": round(statistics.mean(lengths)),
            "load_avg_1min_after": os.getloadavg()[0]}  # a busy machine slows everything: say how busy


def run(args: argparse.Namespace) -> None:
    rows = []
    for max_batch in args.max_batch:
        log = Path(args.log_dir) / f"api-{args.device}-batch{max_batch}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        proc, url, health = start_server(args.home, args.device, max_batch, log)
        try:
            _post(f"{url}/v1/chat/completions", {"model": "niftytune-champion", "max_tokens": args.max_tokens,
                                                 "messages": [{"role": "user", "content": QUESTIONS[0]}]})  # warm-up
            for clients in args.clients:
                row = {"device": health["device"], "version": health["serving"], "max_batch": max_batch,
                       "max_tokens": args.max_tokens, **measure(url, clients, args.per_client[clients], args.max_tokens)}
                print(json.dumps(row), flush=True)
                rows.append(row)
        finally:
            proc.terminate()
            proc.wait(timeout=120)
    print(f"\n{'device':8} {'version':26} {'batch':>5} {'clients':>7} {'requests':>8} {'req/s':>7} {'p50 s':>7} "
          f"{'p95 s':>7} {'chars':>6} {'load':>5}")
    for r in rows:
        print(f"{r['device']:8} {r['version']:26} {r['max_batch']:>5} {r['clients']:>7} {r['requests']:>8} "
              f"{r['requests_per_s']:>7.3f} {r['p50_s']:>7.2f} {r['p95_s']:>7.2f} {r['mean_answer_chars']:>6} "
              f"{r['load_avg_1min_after']:>5.2f}")
    print("\nrerun: " + " ".join([sys.executable, *sys.argv]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        return serve(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="a home with the synthetic market store")
    p.add_argument("--home", type=Path, default=ROOT / ".bench" / "api")
    p = sub.add_parser("run", help="measure the API")
    p.add_argument("--home", type=Path, default=ROOT / ".bench" / "api")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cpu hides every GPU from the server; cuda requires the server to run on one")
    p.add_argument("--clients", type=_ints, default=[1, 8], help="concurrent clients, one row each (default 1,8)")
    p.add_argument("--max-batch", type=_ints, default=[1, 8], help="the server's --max-batch, one server each")
    p.add_argument("--requests", type=int, default=16, help="requests per row, shared by its clients (default 16)")
    p.add_argument("--max-tokens", type=int, default=64, help="max_tokens of every request (default 64)")
    p.add_argument("--log-dir", default="/tmp/niftytune-api-bench", help="where the servers' logs go")
    p.add_argument("--json", type=Path, help="write the rows here too")
    args = ap.parse_args()
    if args.command == "prepare":
        return prepare(args.home)
    args.per_client = {c: max(1, args.requests // c) for c in args.clients}
    run(args)


if __name__ == "__main__":
    main()
