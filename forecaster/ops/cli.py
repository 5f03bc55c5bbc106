"""The operator tools' commands (feed, publish, fleet, nowcast, watch, demo, schedule): parse
the options, call the module in `forecaster.ops`, print. `register` adds them to the app."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from device.mqtt import BrokerAddress, parse_broker_url
from forecaster.console import REGISTRY_DEFAULT, console, err_console, trusted_or_fail
from forecaster.errors import ForecasterError

if TYPE_CHECKING:
    from forecaster.ops.feeds import Item, Publishing, ReplayResult

__all__ = ["register"]

feed_app = typer.Typer(help="Publish real data to the broker.", no_args_is_help=True)
fleet_app = typer.Typer(help="See and steer the agents of a fleet.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the operator commands to `app`, in the order `--help` lists them."""
    app.command()(publish)
    app.command("nowcast")(nowcast_command)
    app.command("watch")(watch_command)
    app.command("demo")(demo_command)
    app.command("schedule")(schedule_command)
    app.add_typer(feed_app, name="feed")
    app.add_typer(fleet_app, name="fleet")


BrokerOption = Annotated[
    str, typer.Option("--broker", help="mqtt://\\[user:pass@]host:port or mqtts://...")
]
CaOption = Annotated[Path | None, typer.Option("--ca", help="CA certificate for mqtts://.")]
CertOption = Annotated[
    Path | None, typer.Option("--cert", help="TLS client certificate (PEM), with --key.")
]
TlsKeyOption = Annotated[
    Path | None, typer.Option("--key", help="Private key of the TLS client certificate (PEM).")
]
PrefixOption = Annotated[
    str, typer.Option("--prefix", help="Topic prefix shared with the agents, e.g. site1/.")
]
AckTimeoutOption = Annotated[
    float, typer.Option(min=0.0, help="Seconds to wait for the broker's acknowledgements.")
]
ClientIdOption = Annotated[str, typer.Option(help="MQTT client id (default: random).")]


def _broker(
    url: str, ca: Path | None, cert: Path | None = None, key: Path | None = None
) -> BrokerAddress:
    address = parse_broker_url(url)
    if (cert is None) != (key is None):
        raise ForecasterError("--cert and --key go together (TLS client certificate)")
    if ca is None and cert is None:
        return address
    # A CA or a client certificate only makes sense over TLS, as in the agent's settings.
    return replace(address, tls=True, ca_file=ca, cert_file=cert, key_file=key)


def _print_events(results: dict) -> None:
    failed = False
    for agent, event in results.items():
        if event is None:
            console.print(
                f"{agent}: [yellow]no answer[/] (offline? it will apply the deploy when it reconnects)"
            )
        elif event.ok:
            console.print(
                f"{agent}: [green]ok[/] {escape(event.detail)}", highlight=False, soft_wrap=True
            )
        else:
            failed = True
            console.print(
                f"{agent}: [red]rejected[/] {escape(event.detail)}", highlight=False, soft_wrap=True
            )
    if failed:
        raise typer.Exit(1)


def publish(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory to ship.")],
    broker: BrokerOption = "mqtt://127.0.0.1:1883",
    agent: Annotated[
        list[str] | None, typer.Option("--agent", help="Agent id (repeatable).")
    ] = None,
    fleet: Annotated[
        bool, typer.Option("--fleet", help="Every agent with a retained status.")
    ] = False,
    registry: Annotated[
        Path, typer.Option(help="Registry whose development keys are trusted.")
    ] = REGISTRY_DEFAULT,
    trusted_key: Annotated[
        list[Path] | None, typer.Option(help="Trusted public key file or dir.")
    ] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for each agent's answer.")] = 30.0,
    ca: CaOption = None,
) -> None:
    """Verify, pack and send a signed bundle to agents over MQTT; print each agent's answer."""
    from forecaster.ops.fleet import collect_statuses, publish_bundle

    address = _broker(broker, ca)
    targets = list(agent or [])
    if fleet:
        targets += [a for a, s in collect_statuses(address).items() if a not in targets]
    if not targets:
        raise ForecasterError("no target agents: pass --agent ID, or --fleet with agents online")
    _print_events(
        publish_bundle(
            address, bundle, targets, trusted_or_fail(registry, trusted_key), wait_s=wait
        )
    )


@fleet_app.command("status")
def fleet_status(broker: BrokerOption = "mqtt://127.0.0.1:1883", ca: CaOption = None) -> None:
    """Every agent from its retained status: online, models, heartbeat, counters, latency, and
    the live accuracy of each price model per symbol."""
    from forecaster.ops.fleet import accuracy_table, collect_statuses, fleet_table

    statuses = collect_statuses(_broker(broker, ca))
    console.print(fleet_table(statuses))
    accuracy = accuracy_table(statuses)
    if accuracy is not None:
        console.print(accuracy)


@fleet_app.command("rollback")
def fleet_rollback(
    agent: Annotated[str, typer.Option("--agent", help="Agent id.")],
    model: Annotated[str, typer.Option("--model", help="Model slot, e.g. price/spx.")],
    version: Annotated[
        str | None, typer.Option(help="Version to return to (default: previous).")
    ] = None,
    broker: BrokerOption = "mqtt://127.0.0.1:1883",
    ca: CaOption = None,
) -> None:
    """Roll an agent's model back to its previous (or a named) version."""
    from forecaster.ops.fleet import send_rollback

    _print_events({agent: send_rollback(_broker(broker, ca), agent, model, version)})


@feed_app.command("replay")
def feed_replay(  # noqa: PLR0913 (one parameter per command-line option)
    dataset: Annotated[
        list[str] | None,
        typer.Option(
            "--dataset",
            help="A shipped daily dataset: sp500 (SPX) or nasdaq (NDX) OHLCV from arch, or a "
            "close-only one (cac, smi, dax, ftse, wti, nyse, djia, gbp, jpy, ibm, dem, cad, chf, "
            "ge, mobil, crsp, gold, silver, bmw, siemens, gbpeer, demgbp). Repeat to interleave "
            "several in date order.",
        ),
    ] = None,
    csv: Annotated[
        list[Path] | None,
        typer.Option(
            "--csv",
            help="CSV with a date and a close column; open, high, low, volume are optional "
            "(missing: open = high = low = close, volume 0). Repeatable.",
        ),
    ] = None,
    symbol: Annotated[
        list[str] | None,
        typer.Option(
            "--symbol",
            "--symbols",
            help="Symbol of each source in the order given (--dataset first, then --csv), "
            "repeated or comma-separated. Default: SPX, NDX or the CSV file name.",
        ),
    ] = None,
    copies: Annotated[
        int,
        typer.Option(min=1, help="Publish each source under N symbols (SPX00, SPX01, ...)."),
    ] = 1,
    rate: Annotated[
        float,
        typer.Option(
            min=0.0, help="Bars per second over all symbols; 0 = as fast as the broker acks."
        ),
    ] = 10.0,
    start: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d"], help="First date (YYYY-MM-DD).")
    ] = None,
    end: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Last date (YYYY-MM-DD).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="At most this many bars per symbol.")
    ] = None,
    seq_start: Annotated[
        int, typer.Option(min=0, help="seq of each symbol's first bar (then +1 per bar).")
    ] = 0,
    date_column: Annotated[str, typer.Option(help="CSV date column.")] = "date",
    close_column: Annotated[str, typer.Option(help="CSV close column.")] = "close",
    qos: Annotated[int, typer.Option(min=0, max=2, help="MQTT QoS of the bars.")] = 1,
    ack_timeout: AckTimeoutOption = 30.0,
    broker: BrokerOption = "mqtt://127.0.0.1:1883",
    ca: CaOption = None,
    cert: CertOption = None,
    key: TlsKeyOption = None,
    prefix: PrefixOption = "",
    client_id: ClientIdOption = "",
) -> None:
    """Publish real daily bars on market/<symbol>/bar in time order, seq +1 per bar, paced."""
    from forecaster.ops.feeds import BarSources, check_delivery, interleave, load_sources

    address = _broker(broker, ca, cert, key)
    sources = BarSources(
        datasets=dataset or [],
        csvs=csv or [],
        symbols=[n.strip() for item in symbol or [] for n in item.split(",") if n.strip()],
        copies=copies,
        start=start.date() if start else None,
        end=end.date() if end else None,
        limit=limit,
        seq_start=seq_start,
        date_column=date_column,
        close_column=close_column,
    )
    series = load_sources(sources)
    symbols = [s[0].symbol for s in series]
    publishing = _publishing(rate, qos, ack_timeout, prefix, client_id)
    total = sum(len(s) for s in series)
    result = _replay_all(interleave(series), total, f"{len(symbols)} symbols", address, publishing)
    period = f"{result.first_ts:%Y-%m-%d} .. {result.last_ts:%Y-%m-%d}" if result.first_ts else "-"
    console.print(
        f"published {result.published} bars of {', '.join(symbols[:5])}"
        f"{f' and {len(symbols) - 5} more' if len(symbols) > 5 else ''} ({period}) in "
        f"{result.elapsed_s:.1f} s ({result.rate:,.0f} bars/s); {result.acknowledged} acknowledged"
    )
    check_delivery(result, "bar", "market/<symbol>/bar", ack_timeout)


def _publishing(
    rate: float, qos: int, ack_timeout: float, prefix: str, client_id: str
) -> Publishing:
    from forecaster.ops.feeds import Publishing

    return Publishing(
        rate=rate, qos=qos, ack_timeout=ack_timeout, prefix=prefix, client_id=client_id
    )


def _replay_all(
    items: Iterable[Item], total: int, label: str, address: BrokerAddress, publishing: Publishing
) -> ReplayResult:
    """Replay `items` over a connection of its own, with a progress bar; the ReplayResult."""
    from forecaster.ops.feeds import publish_feed

    with _progress(total, label) as advance:
        return publish_feed(items, address, publishing, on_sent=lambda _item, _t: advance())


@feed_app.command("macro")
def feed_macro(  # noqa: PLR0913 (one parameter per command-line option)
    rate: Annotated[
        float,
        typer.Option(min=0.0, help="Releases per second; 0 = as fast as the broker acknowledges."),
    ] = 10.0,
    start: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="First release date (YYYY-MM-DD, UTC)."),
    ] = None,
    end: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="Last release date (YYYY-MM-DD, UTC)."),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many releases.")] = None,
    qos: Annotated[int, typer.Option(min=0, max=2, help="MQTT QoS of the releases.")] = 1,
    ack_timeout: AckTimeoutOption = 30.0,
    broker: BrokerOption = "mqtt://127.0.0.1:1883",
    ca: CaOption = None,
    cert: CertOption = None,
    key: TlsKeyOption = None,
    prefix: PrefixOption = "",
    client_id: ClientIdOption = "",
) -> None:
    """Replay the US macro panel's releases (monthly indicators, quarterly GDP) on
    macro/<series> in release order, as their calendar released them, paced."""
    from forecaster.ops.feeds import check_delivery
    from forecaster.ops.macro_feed import macro_releases

    address = _broker(broker, ca, cert, key)
    releases = macro_releases(start.date() if start else None, end.date() if end else None, limit)
    publishing = _publishing(rate, qos, ack_timeout, prefix, client_id)
    result = _replay_all(releases, len(releases), "macro releases", address, publishing)
    console.print(
        f"published {result.published} releases of {len(result.per_symbol)} series "
        f"({result.first_ts:%Y-%m-%d %H:%M} .. {result.last_ts:%Y-%m-%d %H:%M} UTC) in "
        f"{result.elapsed_s:.1f} s; {result.acknowledged} acknowledged"
    )
    check_delivery(result, "release", "macro/<series>", ack_timeout)


@contextmanager
def _progress(total: int, what: str) -> Iterator[Callable[[], None]]:
    """A transient progress bar on a terminal; yields the function that advances it by one."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        f"replaying {what}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    ) as progress:
        task = progress.add_task("replay", total=total)
        yield lambda: progress.advance(task)


def nowcast_command(  # noqa: PLR0913 (one parameter per command-line option)
    region: Annotated[str, typer.Option(help="Region of the GDP nowcast.")] = "us",
    broker: BrokerOption = "mqtt://127.0.0.1:1883",
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds to wait for an agent's reply.")
    ] = 5.0,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the nowcast (or track) as JSON.")
    ] = False,
    history: Annotated[
        bool,
        typer.Option(
            "--history", help="The track of the current and previous quarter, per release."
        ),
    ] = False,
    csv_file: Annotated[
        Path | None,
        typer.Option("--csv", help="With --history: also write the track to this CSV file."),
    ] = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: TlsKeyOption = None,
    prefix: PrefixOption = "",
) -> None:
    """Pull the current GDP nowcast and the news behind its latest revision: ask the agents on
    nowcast/gdp/<region>/get (MQTT v5 request/response); if none answers in time, show the
    retained nowcast. --history asks for the track (only an agent's answer has it)."""
    from device.topics import Topics
    from forecaster.ops.nowcast import (
        history_table,
        nowcast_panel,
        request_nowcast,
        write_track_csv,
    )

    if csv_file is not None and not history:
        raise ForecasterError("--csv writes the track: use it with --history")
    address = _broker(broker, ca, cert, key)
    answer = request_nowcast(address, region, Topics(prefix), timeout, history=history)
    shown = answer.history if answer.history is not None else answer.nowcast
    if json_output:
        print(shown.model_dump_json(indent=2))
    elif answer.history is not None:
        console.print(history_table(answer.history))
    else:
        console.print(nowcast_panel(answer))
    if csv_file is not None and answer.history is not None:
        rows = write_track_csv(answer.history, csv_file)
        err_console.print(f"wrote {rows} rows to {escape(str(csv_file))}")


def watch_command(
    broker: BrokerOption = "mqtt://127.0.0.1:1883",
    duration: Annotated[
        float, typer.Option(min=0.0, help="Stop after this many seconds (0: until Ctrl-C).")
    ] = 0.0,
    refresh: Annotated[
        float, typer.Option(min=0.5, max=30.0, help="Screen refreshes per second.")
    ] = 4.0,
    ca: CaOption = None,
    cert: CertOption = None,
    key: TlsKeyOption = None,
    prefix: PrefixOption = "",
) -> None:
    """Live table of the latest forecast per symbol: last price, median and band per horizon,
    trend regime, model, latency and age; agents' heartbeats below."""
    from device.topics import Topics
    from forecaster.ops.watch import watch

    watch(
        _broker(broker, ca, cert, key),
        topics=Topics(prefix),
        duration=duration or None,
        console=console,
        refresh_per_second=refresh,
    )


def demo_command(
    duration: Annotated[
        float, typer.Option(min=1.0, help="Seconds of live view before the summary.")
    ] = 30.0,
    rate: Annotated[float, typer.Option(min=0.1, help="Bars replayed per second.")] = 20.0,
    dataset: Annotated[str, typer.Option(help="Dataset to replay: sp500 or nasdaq.")] = "sp500",
    start: Annotated[
        datetime,
        typer.Option(
            formats=["%Y-%m-%d"],
            show_default="2016-01-01",
            help="First replayed date (in the test period by default).",
        ),
    ] = datetime(2016, 1, 1),
    registry: Annotated[
        Path, typer.Option(help="Bundles to serve; trained here when it has no price model.")
    ] = REGISTRY_DEFAULT,
    recipes: Annotated[
        Path, typer.Option(help="Recipes trained (quick) when the registry is empty.")
    ] = Path("models"),
    broker_kind: Annotated[
        str,
        typer.Option("--broker-kind", help="auto (Mosquitto if installed), mosquitto or embedded."),
    ] = "auto",
    trusted_key: Annotated[
        list[Path] | None,
        typer.Option(help="Public key file or dir the agent trusts (default: development keys)."),
    ] = None,
) -> None:
    """Everything on one machine: train quick models if needed, start a broker and an agent,
    replay real S&P 500 bars, show live forecasts, then print a summary and stop it all."""
    from forecaster.ops.demo import DemoOptions, run_demo

    options = DemoOptions(
        registry=registry,
        recipes_dir=recipes,
        duration=duration,
        rate=rate,
        dataset=dataset,
        start=start.date(),
        broker_kind=broker_kind,
        trusted_keys=trusted_key or (),
    )
    run_demo(options, console)


def schedule_command(
    config: Annotated[
        Path,
        typer.Option(
            "--config", help="Trainer settings (TOML); deploy/trainer.example.toml has every key."
        ),
    ],
    once: Annotated[
        bool,
        typer.Option("--once", help="Retrain every recipe once, publish what is better, exit."),
    ] = False,
) -> None:
    """Retrain recipes on cron schedules (and when their data files change); publish a new bundle
    only where it beats the deployed one on the validation metric. Runs until SIGTERM / Ctrl-C."""
    from forecaster.ops.schedule import run_once, serve
    from forecaster.ops.settings import load_trainer_settings

    settings = load_trainer_settings(config)
    root = logging.getLogger()
    root.setLevel(min(root.getEffectiveLevel(), logging.getLevelName(settings.log_level)))
    if not once:
        serve(settings)
        return
    outcomes = run_once(settings)
    failed = len(settings.recipes) - sum(o is not None for o in outcomes)
    if failed:
        raise ForecasterError(
            f"{failed} of {len(settings.recipes)} scheduled run(s) failed or were stopped; "
            "the log above says why"
        )
