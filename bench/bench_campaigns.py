"""Campaign benchmarks: queuing one message for a large audience, and sending it.

Both take one campaign message, due at "07:00 local"-style local times in 40 time zones from
UTC-12 to UTC+14 (every zone's instant already past, none past its expiry), written in three
languages, for confirmed subscribers spread evenly over the zones and the app's languages.

The app's work runs in a process of its own, through the scheduler's own job functions
(``scheduler.run_job`` of ``enqueue_campaign_messages`` and ``drain_outbox``), as the
scheduler process runs them; the SMTP server (aiosmtpd, keeping only envelope sender,
recipient and Message-ID) runs in another, so neither takes the other's interpreter. Both
run on SQLite (a file in the run's work directory, WAL, as the app configures it).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.core import (
    MESSAGE_ID,
    PYTHON,
    ROOT,
    Context,
    Result,
    app_env,
    free_port,
    wait_for_port,
)

# 40 zones from UTC-12 to UTC+14, a few with half- and quarter-hour offsets.
ZONES = [
    "Etc/GMT+12",
    "Pacific/Pago_Pago",
    "Pacific/Honolulu",
    "America/Anchorage",
    "America/Los_Angeles",
    "America/Denver",
    "America/Chicago",
    "America/New_York",
    "America/Halifax",
    "America/St_Johns",
    "America/Sao_Paulo",
    "America/Argentina/Buenos_Aires",
    "Atlantic/South_Georgia",
    "Atlantic/Azores",
    "UTC",
    "Europe/London",
    "Europe/Paris",
    "Africa/Lagos",
    "Africa/Cairo",
    "Asia/Gaza",
    "Asia/Amman",
    "Europe/Istanbul",
    "Asia/Riyadh",
    "Asia/Tehran",
    "Asia/Dubai",
    "Asia/Kabul",
    "Asia/Karachi",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Dhaka",
    "Asia/Jakarta",
    "Asia/Kuala_Lumpur",
    "Asia/Tokyo",
    "Australia/Adelaide",
    "Australia/Sydney",
    "Pacific/Noumea",
    "Pacific/Auckland",
    "Pacific/Chatham",
    "Pacific/Tongatapu",
    "Pacific/Kiritimati",
]
assert len(ZONES) == 40

# Every zone's instant is at most 27 hours old when the message is queued: keep them all due.
EXPIRY_HOURS = 48
FLOOR_SENDER = "floor@bench.invalid"  # the floor's envelope sender, to tell its mail apart
# The floor's rate is steady from the first message on: it sends the first this many only.
FLOOR_SAMPLE = 20_000
_BODY = """Salaam, and thank you for fasting with us today.

At sunset, when you break your fast, think of the families in Gaza who cannot. **Every gift
made today** is pooled and split among Palestinian-led aid groups working on the ground:
hot meals, clean water, medical care and shelter.

- Share the day with three friends
- Give what one meal costs you
- Come back tonight to see the day's total

[Give now](https://example.org/day/bench)

With gratitude,
the organizers
"""


# --- the benchmarks --------------------------------------------------------------------------


def campaign_enqueue_s(ctx: Context) -> list[Result]:
    """Seconds for the scheduler's enqueue job to queue one message for every subscriber.

    100,000 confirmed subscribers across 40 time zones (quick: 20,000), one message due in
    all of them: ``campaigns.enqueue_due`` (through the scheduler's job) writes one outbox
    row per subscriber with one ``INSERT … SELECT`` per 10,000 subscriber ids, each row's
    send time and expiry picked by its zone (a CASE over the 40 zones' instants, computed
    once each). An absolute time budget, the issue's goal; there is no floor.
    """
    n = ctx.scale(100_000, 20_000)
    url = ctx.sqlite_url("campaign_enqueue")
    out = _run_app(ctx, url, n, smtp_port=None, name="campaign_enqueue")
    detail = (
        f"SQLite, {n} subscribers in {len(ZONES)} zones: {out['queued']} rows queued in "
        f"{out['enqueue_s']:.2f} s ({n / out['enqueue_s']:.0f} rows/s; "
        f"{out['enqueue_cpu_s']:.2f} s of CPU in the job's process)"
    )
    value = round(out["enqueue_s"], 3)
    return [Result("campaign_enqueue_s", value, "s", "<=", 5, detail, extra=out)]


def campaign_send_ratio(ctx: Context) -> list[Result]:
    """Enqueue plus delivery of one message to 100,000 subscribers (quick: 10,000), per second,
    divided by the floor's rate.

    App: the scheduler's enqueue job, then its drain job (``outbox.drain``: claim a batch,
    render each copy from its language's template and sign its links, send each over one
    reused SMTP connection, commit each outcome before the next message is complete) to a
    local aiosmtpd server.
    Floor: a bare smtplib loop sending the same messages (the first 20,000), rendered
    beforehand to the very bytes the app sends, over one connection to the same server.
    Every message must arrive exactly once from each.
    """
    n = ctx.scale(100_000, 10_000)
    url = ctx.sqlite_url("campaign_send")
    received_path = ctx.workdir / "campaign_send_received.tsv"
    port = free_port()
    server = subprocess.Popen(
        [PYTHON, "-m", "bench.bench_campaigns", "smtp", str(port), str(received_path)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        out = _run_app(ctx, url, n, smtp_port=port, name="campaign_send")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    received = [line.split("\t") for line in received_path.read_text().splitlines()]
    for phase, sent_by, recipients in (
        ("app", lambda s: s != FLOOR_SENDER, out["recipients"]),
        ("floor", FLOOR_SENDER.__eq__, out["floor_recipients"]),
    ):
        expected = Counter(recipients)
        got = Counter(rcpt for sender, rcpt, _mid in received if sent_by(sender))
        ids = Counter(mid for sender, _rcpt, mid in received if sent_by(sender))
        if got != expected or len(ids) != len(expected) or max(ids.values()) != 1:
            twice = sum(1 for c in got.values() if c > 1)
            raise AssertionError(
                f"{phase}: {sum(got.values())} messages for {len(got)} of {len(expected)} "
                f"recipients, {twice} recipient(s) more than once, {len(ids)} distinct Message-IDs"
            )
    app_s = out["enqueue_s"] + out["drain_s"]
    floor_n = len(out["floor_recipients"])
    app_rate, floor_rate = n / app_s, floor_n / out["floor_s"]
    detail = (
        f"SQLite, {n} messages each arrived once: app {app_rate:.0f} msg/s (enqueue "
        f"{out['enqueue_s']:.1f} s + drain {out['drain_s']:.1f} s, {out['drain_cpu_s']:.1f} s "
        f"of CPU), floor smtplib loop {floor_rate:.0f} msg/s ({floor_n} in {out['floor_s']:.1f} s)"
    )
    return [
        Result(
            "campaign_send_ratio",
            round(app_rate / floor_rate, 3),
            "ratio",
            ">=",
            0.7,
            detail,
            {"app_msg_per_s": app_rate, "floor_msg_per_s": floor_rate, **_figures(out)},
        )
    ]


BENCHMARKS = [campaign_enqueue_s, campaign_send_ratio]


def _figures(out: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in out.items() if not k.endswith("recipients")}


def _run_app(ctx: Context, url: str, n: int, *, smtp_port: int | None, name: str) -> dict:
    """Create the schema, then run the app's side in its own process; what it measured."""
    env = app_env(
        url,
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=str(smtp_port or 9),
        CAMPAIGN_EXPIRY_HOURS=str(EXPIRY_HOURS),
        MAIL_SEND_ON_COMMIT="0",
    )
    subprocess.run(
        [PYTHON, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    spec = ctx.workdir / f"{name}.json"
    spec.write_text(json.dumps({"subscribers": n, "send": smtp_port is not None}))
    log = ctx.workdir / f"{name}.log"
    with log.open("ab") as err:
        done = subprocess.run(
            [PYTHON, "-m", "bench.bench_campaigns", "app", str(spec)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            check=False,
            timeout=1800,
        )
    if done.returncode:
        raise RuntimeError(f"{name} failed:\n{log.read_text()[-3000:]}")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


# --- the app's side, in its own process --------------------------------------------------------


def _seed(n: int) -> int:
    """``n`` confirmed subscribers and one scheduled message due in all their zones; its id."""
    from sqlalchemy import insert

    from fundraiser.extensions import db
    from fundraiser.models import (
        CampaignMessage,
        CampaignStatus,
        CampaignText,
        FastDay,
        FastDayStatus,
        SendKind,
        Subscriber,
        SubscriberStatus,
        utcnow,
    )

    now = utcnow()
    languages = ["en", "ar", "fr", "es", "pt"]
    rows = [
        {
            "email": f"sub{i}@bench.example.org",
            "locale": languages[i % len(languages)],
            "timezone": ZONES[i % len(ZONES)],
            "status": SubscriberStatus.CONFIRMED,
            "wants_day_messages": True,
            "wants_reminders": True,
            "link_version": 1,
            "created_at": now,
            "confirmed_at": now,
        }
        for i in range(n)
    ]
    for start in range(0, n, 10_000):
        db.session.execute(insert(Subscriber), rows[start : start + 10_000])
    # The latest zone (UTC-12) reached its local time a few minutes ago; UTC+14 did 26 h before.
    latest = now - timedelta(minutes=5) - timedelta(hours=12)
    day = FastDay(
        slug="bench-campaigns",
        title="Fast for Gaza",
        local_date=latest.date(),
        timezone="UTC",
        currency="usd",
        status=FastDayStatus.LIVE,
    )
    message = CampaignMessage(
        fast_day=day,
        name="Iftar reminder",
        send_kind=SendKind.LOCAL_TIME,
        local_time=latest.time().replace(second=0, microsecond=0),
        default_locale="en",
        status=CampaignStatus.SCHEDULED,
        scheduled_at=now,
    )
    for locale, subject in (
        ("en", "Break your fast with Gaza tonight"),
        ("ar", "أفطروا مع غزة الليلة"),
        ("fr", "Rompez le jeûne avec Gaza ce soir"),
    ):
        message.texts.append(CampaignText(locale=locale, subject=subject, body_markdown=_BODY))
    db.session.add_all([day, message])
    db.session.commit()
    return message.id


def _app_main(spec: dict[str, Any]) -> dict[str, Any]:
    from sqlalchemy import func, select

    from fundraiser import create_app, scheduler
    from fundraiser.extensions import db
    from fundraiser.models import OutboxMessage, OutboxState

    n = spec["subscribers"]
    app = create_app()
    with app.app_context():
        message_id = _seed(n)

    def states() -> dict[str, int]:
        with app.app_context():
            rows = db.session.execute(
                select(OutboxMessage.state, func.count())
                .where(OutboxMessage.campaign_message_id == message_id)
                .group_by(OutboxMessage.state)
            ).all()
            return {str(state): count for state, count in rows}

    began, cpu = time.perf_counter(), time.process_time()
    outcome = scheduler.run_job(
        app, "enqueue_campaign_messages", scheduler.enqueue_campaign_messages
    )
    enqueue_s, enqueue_cpu_s = time.perf_counter() - began, time.process_time() - cpu
    queued = states()
    if not outcome.ok or queued != {OutboxState.QUEUED.value: n}:
        raise AssertionError(f"enqueue: {outcome.summary}; outbox {queued}")
    out: dict[str, Any] = {"enqueue_s": enqueue_s, "enqueue_cpu_s": enqueue_cpu_s, "queued": n}
    if not spec["send"]:
        return out

    began, cpu = time.perf_counter(), time.process_time()
    outcome = scheduler.run_job(app, "drain_outbox", scheduler.drain_outbox)
    out["drain_s"], out["drain_cpu_s"] = time.perf_counter() - began, time.process_time() - cpu
    sent = states()
    if not outcome.ok or sent != {OutboxState.SENT.value: n}:
        raise AssertionError(f"drain: {outcome.summary}; outbox {sent}")

    with app.app_context():
        rows = db.session.execute(
            select(OutboxMessage.id, OutboxMessage.to_email)
            .where(OutboxMessage.campaign_message_id == message_id)
            .order_by(OutboxMessage.id)
        ).all()
        out["recipients"] = [to for _id, to in rows]
        sample = [row_id for row_id, _to in rows[:FLOOR_SAMPLE]]
        out["floor_recipients"], out["floor_s"] = _floor(sample, app.config)
    return out


def _floor(ids: list[int], config: Any) -> tuple[list[str], float]:
    """Send the outbox's messages again with a bare smtplib loop over one connection.

    Messages are rendered to bytes beforehand by the app's own ``outbox.Composer``, 10,000
    at a time (outside the clock), so only the SMTP conversation is timed.
    """
    import smtplib

    from fundraiser.extensions import db
    from fundraiser.outbox import Composer, rows_for_sending

    recipients: list[str] = []
    elapsed = 0.0
    smtp = smtplib.SMTP(config["MAIL_SERVER"], config["MAIL_PORT"])
    try:
        for start in range(0, len(ids), 10_000):
            rows = rows_for_sending(ids[start : start + 10_000])
            # The very bytes the app's sender writes for each row (links signed, bodies
            # encoded); a message on the general path is flattened as send_message would.
            composer = Composer()
            ready = [(row.to_email, _wire_bytes(composer.wire(row).content)) for row in rows]
            db.session.rollback()
            began = time.perf_counter()
            for to, data in ready:
                smtp.sendmail(FLOOR_SENDER, [to], data)
            elapsed += time.perf_counter() - began
            recipients.extend(to for to, _data in ready)
    finally:
        smtp.quit()
    return recipients, elapsed


def _wire_bytes(message: Any) -> bytes:
    if isinstance(message, bytes):
        return message
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


# --- the SMTP server, in its own process --------------------------------------------------------


class _CountingHandler:
    """Keeps (envelope sender, recipient, Message-ID) of each message, nothing else."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        headers = envelope.content.split(b"\r\n\r\n", 1)[0]
        found = MESSAGE_ID.search(headers)
        message_id = found.group(1).decode() if found else ""
        sender = envelope.mail_from or ""
        self.received.extend((sender, rcpt.lower(), message_id) for rcpt in envelope.rcpt_tos)
        return "250 OK"


def _smtp_main(port: int, path: Path) -> None:
    """Serve until SIGTERM, then write what arrived to ``path`` (one message a line)."""
    from aiosmtpd.controller import Controller

    # Blocked before the server's thread starts, so only sigwait below receives it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    handler = _CountingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    signal.sigwait({signal.SIGTERM})
    controller.stop()
    path.write_text("".join(f"{s}\t{r}\t{m}\n" for s, r, m in handler.received))


if __name__ == "__main__":
    if sys.argv[1] == "smtp":
        _smtp_main(int(sys.argv[2]), Path(sys.argv[3]))
    else:
        result = _app_main(json.loads(Path(sys.argv[2]).read_text()))
        print(json.dumps(result))
