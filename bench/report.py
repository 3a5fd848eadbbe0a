"""Turns bench/results/*.json into the performance table of docs/performance.md and bench/plots/*.png.

python -m bench.report          prints the Markdown; writes the plots
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.quality.summary import markdown as quality_markdown

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
PLOTS = ROOT / "plots"
GTE = "gte-small (random weights)"
MINILM = "all-MiniLM-L6-v2"


def load(name: str) -> dict[str, Any]:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def st_rate(embedder: dict[str, Any], model: str) -> float | None:
    for row in embedder.get("throughput", []):
        if row["engine"] == "sentence-transformers" and row["model"] == model:
            return float(row["texts_per_s"])
    return None


def rounds_note(drain: dict[str, Any]) -> str:
    """How the drain figures were taken, when they are medians of several rounds."""
    results = [r for label in (MINILM, GTE) for r in drain.get(label, {}).values()]
    rounds = max((len(r.get("rounds_docs_per_s", [])) for r in results), default=0)
    if rounds < 2:
        return ""
    spreads = [r.get("spread", 0.0) for r in results]
    spreads += [r["raw_onnxruntime"].get("spread", 0.0) for r in results]
    return (
        f" Each rate is the median of {rounds} rounds alternating the worker and the model"
        f" alone; the rounds of one measurement differed by up to {max(spreads):.0%}."
    )


def markdown() -> str:
    drain, embedder = load("drain"), load("embedder")
    writepath, latency = load("writepath"), load("latency")
    scaling, backlog = load("scaling"), load("backlog")
    ceiling, faults = load("ceiling"), load("faults")
    index = load("index")
    lines = []
    machine = drain.get("machine", {})
    first: dict[str, Any] = next(iter(drain.get(MINILM, {}).values()), {})
    lines.append(
        f"Measured {machine.get('date', '?')} on {machine.get('cores', '?')} cores "
        f"({machine.get('cpu', '?')}), Python {machine.get('python', '?')}; corpus: "
        f"{drain.get('corpus', '?')}, {first.get('rows', '?')} texts." + rounds_note(drain)
    )
    lines.append("")
    lines.append(
        "| model | worker end to end, docs/s | raw onnxruntime, docs/s | worker / raw | sentence-transformers, docs/s | worker / s-t | peak RSS | CPU busy |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for label, st_name in ((MINILM, "all-MiniLM-L6-v2"), (GTE, "gte-small-arch")):
        for variant, result in drain.get(label, {}).items():
            raw = result["raw_onnxruntime"]["docs_per_s"]
            st = st_rate(embedder, st_name) if variant == "fp32" else None
            versus_st = f"{result['docs_per_s'] / st:.2f}x" if st else "-"
            lines.append(
                f"| {label} {variant} | {result['docs_per_s']} | {raw} | "
                f"{result['docs_per_s'] / raw:.2f}x | {st if st else '-'} | "
                f"{versus_st} | "
                f"{result['peak_rss_mb']:.0f} MB | {result['cpu_utilisation']:.0%} |"
            )
    lines.append("")
    if latency:
        parts = [
            f"{label}: p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, max {r['max_ms']} ms ({r['samples']} inserts)"
            for label, r in latency.items()
            if isinstance(r, dict) and "p50_ms" in r
        ]
        lines.append("- Idle latency, INSERT to stored vector: " + "; ".join(parts) + ".")
    lines.extend(idle_lines(load("idle")))
    if writepath:
        ins, upd = writepath["insert"], writepath["update"]
        lines.append(
            f"- Write path, bulk statement of {writepath['rows']:,} rows (median of {writepath['rounds']}): "
            f"INSERT into a watched table {ins['watched']['ratio']}x the unwatched table "
            f"(the Supabase guide's per-row `pgmq.send` trigger: {ins['per_row_send']['ratio']}x); "
            f"UPDATE of the content {upd['watched']['ratio']}x (per-row trigger {upd['per_row_send']['ratio']}x)"
            + (
                f"; with a content function, INSERT {ins['watched_function']['ratio']}x,"
                f" UPDATE {upd['watched_function']['ratio']}x."
                if "watched_function" in ins
                else "."
            )
        )
        lines.extend(shape_lines(writepath))
    lines.extend(oltp_lines(load("oltp")))
    lines.extend(bigwatch_lines(load("bigwatch")))
    if drain.get(GTE):
        fp32, int8 = drain[GTE]["fp32"], drain[GTE]["int8"]
        lines.append(
            f"- int8 end to end, gte-small architecture: {int8['docs_per_s'] / fp32['docs_per_s']:.2f}x fp32"
            + (
                f"; MiniLM: {drain[MINILM]['int8']['docs_per_s'] / drain[MINILM]['fp32']['docs_per_s']:.2f}x"
                if drain.get(MINILM)
                else ""
            )
            + "."
        )
    fidelity = embedder.get("int8_fidelity", {}).get("all-MiniLM-L6-v2")
    if fidelity:
        lines.append(
            f"- int8 fidelity (real MiniLM weights, cosine to fp32 over the corpus): mean "
            f"{fidelity['mean_cosine']}, minimum {fidelity['min_cosine']}."
        )
    if scaling:
        parts = [
            f"{k}: {v['docs_per_s']} docs/s"
            for k, v in scaling.items()
            if isinstance(v, dict) and "docs_per_s" in v
        ]
        lines.append(
            "- Scaling on one queue, gte-small architecture fp32: " + "; ".join(parts) + "."
        )
    if backlog:
        lines.append(
            f"- Backlog of {backlog['rows']:,} rows ({backlog['model']}): {backlog['docs_per_s']} docs/s; "
            f"worker RSS {backlog['rss_mb_first_tenth_max']} MB during the first tenth, "
            f"{backlog['rss_mb_last_tenth_max']} MB during the last."
        )
    if index:
        lines.append(
            f"- HNSW index upkeep: the worker's write of {index['rows_per_update']} vectors into a "
            f"{index['rows_in_table']:,}-row `halfvec(384)` table takes {index['update_ms_with_index']} ms "
            f"with the index, {index['update_ms_without_index']} ms without "
            f"({index['ms_per_row_for_the_index']} ms of server time per row; median of {index['rounds']})."
        )
    if ceiling:
        tokens = ceiling["tokens"]["mean"]
        equivalent = ceiling["docs_per_s"] * tokens / 128
        lines.append(
            f"- gte-small architecture at ~128-token inputs ({ceiling['rows']} texts, mean {tokens} tokens), fp32: "
            f"worker end to end {ceiling['docs_per_s']} docs/s, onnxruntime alone {ceiling['raw_onnxruntime']['docs_per_s']} "
            f"({ceiling['docs_per_s'] / ceiling['raw_onnxruntime']['docs_per_s']:.2f}x); per 128 tokens the worker does "
            f"{equivalent:.1f} docs/s, against the quoted ceiling of 37 measured / 56 theoretical."
        )
    if faults:
        kill, restart = faults["kill_9"], faults["postgres_restart"]
        lines.append(
            f"- Faults: kill -9 after {kill['embedded_at_kill']} of {kill['rows']} rows: {kill['rows_lost']} lost, "
            f"queue drained again {kill['seconds_from_kill_to_drained']} s after the kill (lease {kill['vt_seconds']} s); "
            f"Postgres down {restart['outage_seconds']:.0f} s: worker stayed up, a row inserted after the restart embedded "
            f"{restart['seconds_from_server_back_to_new_row_embedded']} s after the server was back; "
            + "; ".join(
                f"{m['workers']} workers on {m['rows']:,} rows: {m['duplicates']} embedded twice"
                for m in faults["many_workers"]
            )
            + "."
        )
    padding = embedder.get("padding")
    if padding:
        lines.append(
            f"- Padding (padded tokens / real tokens, gte-small architecture): "
            f"{padding['arrival_order']['padded_over_real_tokens']} in batches of 32 as they come, "
            f"{padding['embed_worker']['padded_over_real_tokens']} sorted by length with a token budget."
        )
    return "\n".join(lines)


def idle_lines(idle: dict[str, Any]) -> list[str]:
    """bench/idle.py: an idle worker waiting in the database, directly and behind PgBouncer."""
    direct = idle.get("direct", {})
    if "idle" not in direct:
        return []

    def cpu(window: dict[str, Any]) -> str:
        return (
            f"{window['database_backends_cpu_percent']}% of a core in the database, "
            f"{window['worker_process_cpu_percent']}% in the worker"
        )

    def lat(result: dict[str, Any]) -> str:
        return (
            f"p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms" if "p50_ms" in result else "-"
        )

    pooled = idle.get("pgbouncer_transaction_mode", {})
    return [
        f"- Idle worker ({idle.get('model', '?')}): INSERT to stored vector {lat(direct['latency'])}; "
        f"in a prepared transaction (PREPARE, COMMIT PREPARED) {lat(direct['latency_two_phase'])}; "
        f"after 10 s without writes {lat(direct['latency_after_quiet'])}; through PgBouncer "
        f"(transaction mode) {lat(pooled.get('latency', {}))}. Waiting costs "
        f"{cpu(direct['idle_after_work'])} right after work, {cpu(direct['idle'])} once quiet, "
        f"{cpu(direct['idle_while_others_write'])} while another session commits "
        f"{direct['idle_while_others_write'].get('other_writes_per_s', '?')} writes/s."
    ]


def plots() -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    drain, embedder = load("drain"), load("embedder")
    if drain:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        labels, worker, raw_rates, st = [], [], [], []
        for label, st_name in ((MINILM, "all-MiniLM-L6-v2"), (GTE, "gte-small-arch")):
            for variant, result in drain.get(label, {}).items():
                labels.append(f"{label.split(' ')[0]}\n{variant}")
                worker.append(result["docs_per_s"])
                raw_rates.append(result["raw_onnxruntime"]["docs_per_s"])
                st.append((st_rate(embedder, st_name) or 0) if variant == "fp32" else 0)
        x = range(len(labels))
        width = 0.27
        ax.bar([i - width for i in x], worker, width, label="embed-worker, end to end")
        ax.bar(list(x), raw_rates, width, label="onnxruntime alone")
        ax.bar([i + width for i in x], st, width, label="sentence-transformers")
        ax.set_xticks(list(x), labels)
        ax.set_ylabel("documents / s")
        ax.set_title("Throughput on 2 cores (stdlib docstrings)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = PLOTS / "throughput.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    backlog = load("backlog")
    if backlog:
        fig, ax = plt.subplots(figsize=(7, 3))
        samples = backlog["samples"]
        ax.plot([s[2] for s in samples], [s[1] for s in samples])
        ax.set_xlabel("rows embedded")
        ax.set_ylabel("worker RSS, MB")
        ax.set_ylim(bottom=0)
        ax.set_title(f"Memory while draining {backlog['rows']:,} rows")
        fig.tight_layout()
        path = PLOTS / "backlog_rss.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def shape_lines(writepath: dict[str, Any]) -> list[str]:
    """The bulk INSERT into a composite-key table and into a partitioned one."""
    shapes = writepath.get("shapes", {})
    if not shapes:
        return []
    label = {
        "composite": "composite primary key",
        "partitioned": f"{writepath.get('partitions', 8)} partitions",
        "text_key": "text primary key",
    }
    return [
        "- Bulk INSERT of the same rows into other tables, watched vs unwatched: "
        + "; ".join(
            f"{label.get(name, name)} {shape['insert']['watched']['ratio']}x"
            for name, shape in shapes.items()
        )
        + "."
    ]


def oltp_lines(oltp: dict[str, Any]) -> list[str]:
    """Single-row statements from many connections (bench/oltp.py)."""
    if not oltp:
        return []
    parts = []
    for workload in ("insert", "update"):
        r = oltp[workload]
        cpu = (
            f", server CPU per transaction {r['watched']['cpu_ratio']}x"
            if "cpu_ratio" in r["watched"]
            else ""
        )
        function = (
            f", {r['watched_function']['ratio']}x with a content function"
            if "watched_function" in r
            else ""
        )
        parts.append(
            f"single-row {workload.upper()} {r['watched']['ratio']}x the unwatched TPS{function}"
            f" (the guide's per-row trigger {r['guide']['ratio']}x){cpu}"
        )
    return [
        f"- OLTP write path, {oltp['clients']} pgbench clients, medians of {oltp['rounds']}"
        f" alternating runs of {oltp['seconds']} s: " + "; ".join(parts) + "."
    ]


def bigwatch_lines(bigwatch: dict[str, Any]) -> list[str]:
    """watch() on a large table, before and after the backfill (bench/bigwatch.py)."""
    if not bigwatch:
        return []
    parts = []
    for rows, r in bigwatch["sizes"].items():
        if "before" not in r:  # measured from a tree without the old revisions (bigwatch.py)
            parts.append(f"{int(rows):,} rows: watch() {r['after']['watch_seconds']:.2f} s")
            continue
        before, after = r["before"], r["after"]
        parts.append(
            f"{int(rows):,} rows: watch() {before['watch_seconds']:.2f} s -> "
            f"{after['watch_seconds']:.2f} s, a concurrent SELECT by key blocked "
            f"{before['select_seconds']:.2f} s -> {after['select_seconds']:.3f} s "
            f"(the backfill then queued the rest in {after['steps']:,.0f} steps, "
            f"median {after['step_median_seconds'] * 1000:.0f} ms)"
        )
    return [
        "- watch() on a large table, before (one transaction) -> after (backfill): "
        + "; ".join(parts)
        + "."
    ]


if __name__ == "__main__":
    print(markdown())
    if quality := load("quality"):
        print("\n## Retrieval quality\n")
        print(quality_markdown(quality))
    for path in plots():
        print(f"wrote {path}")
