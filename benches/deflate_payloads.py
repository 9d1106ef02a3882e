#!/usr/bin/env python3
"""Write a deterministic stream of chat JSON messages, one per line, for the compression bench.

    python3 benches/deflate_payloads.py OUT.jsonl [--messages 20000] [--seed 1]

The traffic of a chat app's room channel: mostly `message` events (a few words, sometimes a
paragraph, a link, a code paste or emoji; mentions, reactions, replies), plus `typing`,
`presence`, `ack` and `history` (a page of earlier messages) events, from a few hundred users
in a few dozen rooms. Sizes go from about 60 B (acks) to a few KiB (history pages, pastes).
The same seed and count give the same bytes on every machine and Python version: the
generator has its own PRNG (splitmix64) and uses nothing of `random`. Lines are UTF-8 JSON
with no spaces, as `JSON.stringify` writes them; no line contains a newline. Standard
library only.
"""

import argparse
import json
import sys

MASK = (1 << 64) - 1

WORDS = (
    "the a to and of is it in that you for on this we be with have not are but can just so "
    "what if about at was do all will get like would there one more as from now need up out "
    "think should know here when by or then see also has time could some it's i'm don't "
    "deploy build release merge branch review PR test tests flaky staging prod rollback "
    "hotfix ticket sprint standup meeting lunch coffee today tomorrow yesterday week friday "
    "server client socket latency timeout retry cache queue worker job cron logs dashboard "
    "metrics alert oncall incident pager fixed broken works green red CI pipeline docker "
    "config env secret token login auth session user users customer feedback design "
    "mockup figma copy launch beta feature flag bug issue crash memory leak CPU disk "
    "database migration schema index query slow fast faster thanks thank ok okay sure "
    "yes no maybe agreed nice great cool awesome lol haha sorry please check look "
    "looks good LGTM ship it done wip blocked waiting on ping me later afk back brb"
).split()

EMOJI = ["🙂", "😂", "👍", "🎉", "🚀", "🔥", "👀", "✅", "❌", "🙏", "💯", "🤔"]
PHRASES_INTL = [
    "Grüße aus München",
    "ça marche très bien",
    "¿nos vemos mañana?",
    "спасибо, всё работает",
    "了解しました、確認します",
    "好的，我看一下",
    "naïve café déjà vu",
]
ROOMS = [f"app/{name}" for name in (
    "general", "random", "dev", "ops", "design", "support", "releases", "standup",
    "frontend", "backend", "mobile", "data", "security", "hiring", "music", "pets",
)] + [f"team/{n}" for n in range(16)] + [f"dm/{n}" for n in range(8)]
STATUSES = ["online", "away", "busy", "offline"]
CLIENTS = ["web/1.42.0 (Chrome 131)", "web/1.42.0 (Firefox 133)", "ios/5.3.1", "android/5.3.0",
           "desktop/2.8.4 (macOS)", "desktop/2.8.4 (Windows)"]
REACTIONS = ["+1", "tada", "eyes", "heart", "laughing", "rocket", "white_check_mark"]
CODE = [
    "fn main() {\n    let conn = Connection::server(config, now);\n    run(conn)?;\n}",
    "SELECT id, room, ts FROM messages WHERE room = $1 ORDER BY ts DESC LIMIT 50;",
    "ERROR 2026-11-24T10:02:11Z worker-3 job=digest attempt=2 error=\"timeout after 30s\"",
    "const ws = new WebSocket(url);\nws.onmessage = (e) => render(JSON.parse(e.data));",
    "$ kubectl -n chat rollout restart deploy/gateway\ndeployment.apps/gateway restarted",
]


class Rng:
    """splitmix64: tiny, fast enough, the same everywhere."""

    def __init__(self, seed):
        self.state = seed & MASK

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n):
        return self.next() % n

    def chance(self, percent):
        return self.below(100) < percent

    def pick(self, items):
        return items[self.below(len(items))]

    def zipf_word(self):
        # Common words far more often than rare ones: index ~ n * u^2.
        u = self.next() / 2**64
        return WORDS[int(len(WORDS) * u * u)]

    def hex(self, digits):
        return f"{self.next():016x}"[:digits]


class Chat:
    def __init__(self, seed):
        self.rng = Rng(seed)
        self.seq = 0
        self.ts = 1_764_000_000_000  # ms since the epoch
        self.users = 400

    def user(self):
        # A few people do most of the talking.
        r = self.rng
        return f"user-{r.below(20) if r.chance(60) else r.below(self.users)}"

    def text(self):
        r = self.rng
        kind = r.below(100)
        if kind < 70:
            n = 3 + r.below(18)
        elif kind < 94:
            n = 20 + r.below(60)
        else:
            n = 80 + r.below(320)
        words = [r.zipf_word() for _ in range(n)]
        if r.chance(15):
            words.insert(r.below(len(words)), r.pick(PHRASES_INTL))
        if r.chance(12):
            words.append(f"https://git.example.com/app/{r.pick(['gateway', 'web', 'ios'])}/pull/{1000 + r.below(9000)}")
        if r.chance(20):
            words.append(r.pick(EMOJI))
        text = " ".join(words)
        text = text[0].upper() + text[1:]
        if r.chance(4):
            text += "\n```\n" + r.pick(CODE) + "\n```"
        return text

    def message_body(self, room):
        r = self.rng
        self.seq += 1
        self.ts += 200 + r.below(30_000)
        data = {"id": f"m-{r.hex(12)}", "text": self.text(), "ts": self.ts}
        if r.chance(15):
            data["mentions"] = [self.user() for _ in range(1 + r.below(3))]
        if r.chance(10):
            data["reply_to"] = f"m-{r.hex(12)}"
        if r.chance(8):
            data["reactions"] = {r.pick(REACTIONS): 1 + r.below(6) for _ in range(1 + r.below(3))}
        if r.chance(3):
            data["edited"] = True
        return {"type": "message", "room": room, "seq": self.seq, "from": self.user(), "data": data}

    def event(self):
        r = self.rng
        room = ROOMS[r.below(8)] if r.chance(70) else r.pick(ROOMS)
        kind = r.below(100)
        if kind < 70:
            return self.message_body(room)
        if kind < 78:
            return {"type": "typing", "room": room, "from": self.user(), "ts": self.ts}
        if kind < 85:
            return {"type": "presence", "room": room, "data": {
                "user": self.user(), "status": r.pick(STATUSES), "client": r.pick(CLIENTS),
                "ts": self.ts}}
        if kind < 95:
            return {"type": "ack", "seq": self.seq, "id": f"m-{r.hex(12)}", "ts": self.ts}
        page = [self.message_body(room) for _ in range(4 + r.below(12))]
        return {"type": "history", "room": room, "data": {"messages": page, "more": r.chance(50)}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="file to write (JSON lines)")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.messages <= 0:
        sys.exit("--messages must be positive")
    chat = Chat(args.seed)
    total = 0
    with open(args.out, "wb") as f:
        for _ in range(args.messages):
            line = json.dumps(chat.event(), ensure_ascii=False, separators=(",", ":")).encode()
            total += len(line)
            f.write(line + b"\n")
    print(f"{args.out}: {args.messages} messages, {total} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
