"""Generate the bundled demo dataset: customer-support ticket routing.

Why this task exists
--------------------
The demo needs a task on which fine-tuning makes a visible difference in a few
minutes on a laptop CPU.  Out of the box, a tiny instruction-tuned model such as
SmolLM2-135M-Instruct does *not* reliably answer "Route this message ... Answer
with exactly one word" with a bare label from the fixed set: it chats, explains,
repeats the question, invents team names or adds punctuation.  A few minutes of
LoRA tuning on these 480 short examples teaches it both the output format (one
lowercase word from {billing, shipping, technical, account, refund}) and a
reasonable mapping from message meaning to team, so the before/after comparison
in the notebook is obvious.

Messages are assembled from independent template parts (openers, situation
phrases with slots for products, order numbers, amounts, dates, closers) so the
label is determined by the meaning of the situation rather than by a keyword:
the label word itself appears only occasionally.

The script is deterministic (``random.Random(0)``, stdlib only) and idempotent:
running it again rewrites byte-identical output to
``jupyter_ft/demo/support_tickets.jsonl``.

Usage::

    python3 scripts/make_demo_data.py
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

SEED = 0
ROWS_PER_LABEL = 96
LABELS = ("billing", "shipping", "technical", "account", "refund")
INSTRUCTION = (
    "Route this customer message to one team. Answer with exactly one word: "
    "billing, shipping, technical, account or refund."
)
MIN_WORDS, MAX_WORDS = 10, 30
# Rough stdlib stand-in for a BPE token count (SmolLM2 splits digits one by
# one).  With the ~25-token instruction this keeps every full row well under
# 60 tokens.
MAX_APPROX_TOKENS = 24

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_PATH = REPO_ROOT / "jupyter_ft" / "demo" / "support_tickets.jsonl"

# --------------------------------------------------------------------------
# Slot fillers
# --------------------------------------------------------------------------
PRODUCTS = [
    "wireless headset", "standing desk", "coffee grinder", "yoga mat",
    "phone case", "desk lamp", "sports jacket", "backpack", "blender",
    "smart watch", "winter jacket", "bluetooth speaker", "air fryer",
    "office chair", "kettle", "webcam", "mechanical keyboard", "water bottle",
    "gaming mouse", "raincoat", "throw blanket", "vacuum cleaner",
]
# connected gadgets, for sync / pairing / firmware problems
GADGETS = ["smart watch", "fitness tracker", "bluetooth speaker", "smart scale",
           "wireless headset", "smart bulb", "baby monitor", "smart thermostat"]
PLANS = ["Pro plan", "Premium subscription", "family plan", "annual plan",
         "monthly membership", "Basic plan", "Plus subscription"]
COURIERS = ["DHL", "UPS", "FedEx", "the courier", "the driver", "the postman",
            "Royal Mail", "DPD"]
# {when}: a complete time adverbial ("... was delivered {when}")
WHENS = ["on Monday", "on Tuesday", "on Friday", "last week", "on March 3",
         "on the 14th", "yesterday", "on May 21", "two weeks ago", "on June 9",
         "last Thursday", "10 days ago", "on Oct 2"]
# {day}: a bare day that works after "since" / "by" / "from"
DAYS = ["Monday", "Tuesday", "Friday", "March 3", "the 14th", "May 21",
        "June 9", "Oct 2", "the weekend"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July",
          "August", "September", "October", "November", "December"]
DEVICES = ["iPhone", "Android phone", "iPad", "laptop", "Windows PC",
           "Chromebook", "Samsung tablet", "Mac"]
APP_SCREENS = ["checkout page", "settings screen", "search bar", "home screen",
               "photo upload", "cart page", "dashboard", "video player"]
ERROR_CODES = ["E-502", "ERR_503", "error 0x80070005", "code 1004",
               "error 500", "E42", "code NET-17", "error 403"]
CARDS = ["Visa", "Mastercard", "Amex card", "debit card", "PayPal",
         "company card"]


def order_id(rng: random.Random) -> str:
    style = rng.randrange(3)
    n = rng.randrange(10000, 99999)
    if style == 0:
        return f"#{n}"
    if style == 1:
        return f"order {n}"
    return f"order #A{n}"


CURRENCIES = ["$", "$", "€", "£"]
WHOLE_AMOUNTS = [9, 12, 19, 24, 29, 35, 49, 59, 79, 89, 120, 149, 199]
CENTS = ["", ".99", ".50", ".00"]


def amount(rng: random.Random) -> str:
    cur = rng.choice(CURRENCIES)
    return f"{cur}{rng.choice(WHOLE_AMOUNTS)}{rng.choice(CENTS)}"


def amount_pair(rng: random.Random) -> tuple[str, str]:
    """Two amounts in the same currency, the first strictly lower."""
    cur = rng.choice(CURRENCIES)
    lo, hi = sorted(rng.sample(WHOLE_AMOUNTS, 2))
    return (f"{cur}{lo}{rng.choice(CENTS)}", f"{cur}{hi}{rng.choice(CENTS)}")


def fill(template: str, rng: random.Random) -> str:
    """Replace {slot} markers with random fillers."""
    if "{lo}" in template:
        lo, hi = amount_pair(rng)
        template = template.replace("{lo}", lo).replace("{hi}", hi)
    slots = {
        "product": lambda: rng.choice(PRODUCTS),
        "gadget": lambda: rng.choice(GADGETS),
        "plan": lambda: rng.choice(PLANS),
        "courier": lambda: rng.choice(COURIERS),
        "when": lambda: rng.choice(WHENS),
        "day": lambda: rng.choice(DAYS),
        "month": lambda: rng.choice(MONTHS),
        "device": lambda: rng.choice(DEVICES),
        "screen": lambda: rng.choice(APP_SCREENS),
        "error": lambda: rng.choice(ERROR_CODES),
        "card": lambda: rng.choice(CARDS),
        "order": lambda: order_id(rng),
        "amount": lambda: amount(rng),
        "n": lambda: str(rng.randrange(2, 9)),
    }
    out = template
    for key, gen in slots.items():
        marker = "{" + key + "}"
        while marker in out:
            out = out.replace(marker, gen(), 1)
    return out


# --------------------------------------------------------------------------
# Situations per label (the part that determines the label)
# --------------------------------------------------------------------------
SITUATIONS: dict[str, list[str]] = {
    "billing": [
        "I was charged twice for {order} {when}.",
        "my card shows two identical charges of {amount} for one order.",
        "the invoice for {order} lists the wrong company name and address.",
        "I need a proper VAT invoice for my {month} purchase for my accountant.",
        "you charged me {hi} for the {product} but the listed price was {lo}.",
        "my {card} keeps getting declined at checkout even though it works everywhere else.",
        "why did my {plan} go up from {lo} to {hi} this month?",
        "the sales tax on my last invoice looks too high, can someone explain it?",
        "I'd like to switch my payment method from my {card} to a different card.",
        "there's a charge of {amount} on my statement that I don't recognise.",
        "my {plan} was billed yearly but I signed up for monthly payments.",
        "can you resend the invoice for {order}? I never received it by email.",
        "I was billed for the {plan} after I downgraded to the free tier.",
        "the promo code was accepted but the discount never showed on my charge.",
        "I need my company VAT number added to the {month} invoice.",
        "my payment of {amount} failed but the bank says nothing was blocked.",
        "I got charged a late fee of {amount} even though I paid on time.",
        "the receipt for {order} shows a different total than what my bank took.",
        "how do I update the billing address that appears on my invoices?",
        "I was charged in euros instead of dollars for {order}.",
        "my {plan} renewal of {amount} was taken twice {when}.",
        "please explain the extra {amount} fee on my latest statement.",
    ],
    "shipping": [
        "my {product} was supposed to arrive {when} and it still isn't here.",
        "the tracking for {order} hasn't updated in five days.",
        "I put the wrong street address on {order}, can you change it before it ships?",
        "{courier} says my parcel was delivered but there's nothing at my door.",
        "when will {order} actually be delivered? It says processing since {day}.",
        "the tracking link for my {product} just gives an invalid number message.",
        "{courier} left my package at the wrong house again.",
        "is it possible to get {order} delivered to my office instead of home?",
        "my parcel seems to be lost, it's been stuck at the depot since {day}.",
        "I was told {n}-day delivery but it's been over a week for my {product}.",
        "can I pick up {order} from a local collection point instead?",
        "{courier} tried to deliver while I was home and left a missed-delivery card.",
        "only half of {order} arrived, the {product} is still in transit.",
        "{courier} keeps saying my address can't be found, so {order} never gets delivered.",
        "my {product} box arrived crushed and soaking wet from the courier.",
        "the estimated delivery date for {order} keeps moving back.",
        "could you ask {courier} to leave my parcel with a neighbour?",
        "I need the {product} by {day} for a gift, can you expedite the delivery?",
        "tracking says returned to sender for {order}, what happened?",
        "which courier is handling {order}? I can't find any tracking info.",
        "the driver never showed up during the delivery window {when}.",
        "my {product} has been sitting in customs for {n} days.",
    ],
    "technical": [
        "the app crashes every time I open the {screen} on my {device}.",
        "I keep getting {error} when I try to load the {screen}.",
        "your website is painfully slow today, pages take a minute to load.",
        "my {gadget} won't sync with the app on my {device} anymore.",
        "the app can't connect to the server, it just spins forever.",
        "after the latest update the {screen} is completely blank on my {device}.",
        "the {screen} freezes whenever I scroll, looks like a bug.",
        "I see {error} every time I press the submit button.",
        "notifications stopped working on my {device} since {day}.",
        "the desktop app won't install on my {device}, it fails halfway with {error}.",
        "my {gadget} keeps disconnecting from bluetooth after a few minutes.",
        "images on the {screen} don't load, I just get broken icons.",
        "the firmware update bricked my {gadget}, it won't turn on now.",
        "dark mode makes the text invisible on the {screen}.",
        "since the update, the app drains my {device} battery in about an hour.",
        "the {screen} shows {error} on both Chrome and Firefox.",
        "pairing my {gadget} with my {device} fails every single time.",
        "your site won't load at all on my {device}, just a white page.",
        "search results are always empty no matter what I type in the search bar.",
        "videos keep buffering and stuttering even on fast wifi.",
        "the app logs a sync error and my data from {day} is missing.",
        "buttons on the {screen} don't respond to taps on my {device}.",
    ],
    "account": [
        "I forgot my password and the reset email never arrives.",
        "how do I change the email address on my profile?",
        "I lost my phone and now I can't get past the two-factor code.",
        "please delete my account and all my personal data.",
        "I want to change my username, is that possible?",
        "someone else seems to have signed into my profile, I got a login alert from another country.",
        "my profile got locked after too many password attempts.",
        "can I merge my two accounts into one?",
        "I need to turn off 2FA because I switched phones.",
        "I signed up with my work email and want to move to my personal one.",
        "the password reset link says it has expired every time.",
        "how do I update the phone number linked to my login?",
        "I can't remember which email I registered with.",
        "please close my profile for good, I don't use the service anymore.",
        "I never get the verification code by SMS when signing in.",
        "I want to add my partner as a second user on my profile.",
        "my account was suspended {when} and I don't know why.",
        "how can I download a copy of all the data you hold about me?",
        "I'd like to set up an authenticator app instead of text codes.",
        "I changed my name and need it updated on my profile.",
        "I got an email saying my password was changed, but it wasn't me.",
        "I want to unsubscribe from marketing emails in my profile settings.",
    ],
    "refund": [
        "I returned the {product} {when} and still haven't got my money back.",
        "the {product} died after a week, I just want my money back.",
        "please cancel {order} and reimburse the {amount} I paid.",
        "the {product} is nothing like the photos, I'd like to send it back and get my money back.",
        "you confirmed {when} that {amount} would be paid back but it never reached my bank.",
        "how long does it take for a return to be credited back to my {card}?",
        "I cancelled {order} within an hour, when will I be reimbursed?",
        "the {product} arrived broken, I just want my {amount} back, not a replacement.",
        "I'd like to return the {product}, it's not what I expected. How do I get reimbursed?",
        "you only refunded {lo} of the {hi} I paid for {order}.",
        "I cancelled my {plan} in the trial period and want the {amount} returned.",
        "please give me my money back for the {product}, it's unused and still sealed.",
        "you received my return for {order} {when}, still no reimbursement.",
        "can I get a refund instead of store credit for the {product}?",
        "the workshop I booked was cancelled, please return the {amount} to my {card}.",
        "I sent back {order} about {n} weeks ago, where is my money?",
        "I'm returning the {product} because it's defective, please reimburse me.",
        "I'd like to cancel {order} before it ships and get my payment back.",
        "your policy says 30-day returns, so I want my money for the {product} back.",
        "the refund for {order} went to my old {card}, which is closed now.",
        "I was promised a reimbursement of {amount} for the missing item, still waiting.",
        "I don't want the {product} anymore, how do I return it and get reimbursed?",
    ],
}

# --------------------------------------------------------------------------
# Tone: openers and closers (label-neutral), grouped so they match in mood
# --------------------------------------------------------------------------
TONES: dict[str, tuple[list[str], list[str]]] = {
    "polite": (
        ["", "Hi,", "Hello,", "Hi there,", "Good morning,", "Dear support,",
         "Hello team,", "Hi, quick question:", "Sorry to bother you, but",
         "Hi, hoping you can help.", "Hi support,", "Evening,"],
        ["", "Thanks!", "Thank you.", "Thanks in advance.",
         "Any help appreciated.", "Cheers.", "Appreciate it.", "Let me know.",
         "Please advise.", "Many thanks, Sam", "Regards, Priya",
         "Thanks, Maria", "Kind regards, Ahmed"],
    ),
    "neutral": (
        ["", "", "Hi,", "Hey,", "Hey guys,", "Um, hi.", "Quick one:",
         "Hello,"],
        ["", "", "Please help.", "Let me know.", "Waiting for your reply.",
         "- Tom", "Thanks.", "Please check."],
    ),
    "angry": (
        ["", "This is ridiculous:", "Seriously?", "Not happy.", "Ugh.",
         "Third time writing in:", "Urgent:", "Unbelievable."],
        ["", "Please sort this out.", "Fix this please.",
         "Need this resolved today.", "This is really frustrating.",
         "ASAP please.", "Not impressed.", "Sort it out."],
    ),
    "terse": (
        ["", "", "", "hi", "hey"],
        ["", "", "", "thx", "pls help", "pls"],
    ),
}
TONE_NAMES = list(TONES)
TONE_WEIGHTS = [4, 3, 2, 1]

# Occasional realistic typos (applied to at most one word per message).
TYPOS = {
    "receive": "recieve", "received": "recieved", "address": "adress",
    "please": "pls", "thanks": "thx", "definitely": "definately",
    "because": "becuase", "password": "pasword", "delivered": "deliverd",
    "charged": "charegd", "account": "acount", "still": "stil",
    "anymore": "any more", "separate": "seperate", "tracking": "traking",
    "working": "workign", "money": "mony", "until": "untill",
    "invoice": "invoce", "order": "oder",
}


def add_typo(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    idx = [i for i, w in enumerate(words) if w.lower().strip(".,?!:") in TYPOS]
    if not idx:
        return text
    i = rng.choice(idx)
    w = words[i]
    core = w.strip(".,?!:")
    repl = TYPOS[core.lower()]
    words[i] = w.replace(core, repl, 1)
    return " ".join(words)


def style(text: str, tone: str, rng: random.Random) -> str:
    """Random surface variation: casing, emphatic punctuation, typos."""
    if tone == "terse":
        text = text.lower().rstrip(".")
    elif tone == "angry" and rng.random() < 0.3:
        text = text.rstrip(".!?") + rng.choice(["!!", "!!!", "???"])
    if rng.random() < 0.12:
        text = add_typo(text, rng)
    return text


def capitalize_first(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


def make_message(label: str, rng: random.Random) -> str:
    situation = fill(rng.choice(SITUATIONS[label]), rng)
    tone = rng.choices(TONE_NAMES, weights=TONE_WEIGHTS)[0]
    openers, closers = TONES[tone]
    opener = rng.choice(openers)
    closer = rng.choice(closers)
    if opener.endswith((",", "but")):
        body = situation  # the situation continues the opener's sentence
    else:
        body = capitalize_first(situation)
    parts = [p for p in (opener, body, closer) if p]
    return style(" ".join(parts), tone, rng)


def approx_tokens(text: str) -> int:
    return len(re.findall(r"\d|[A-Za-z]+|[^\sA-Za-z\d]", text))


def build(rng: random.Random) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    for label in LABELS:
        count = 0
        attempts = 0
        while count < ROWS_PER_LABEL:
            attempts += 1
            assert attempts < 100_000, f"cannot make enough distinct {label} rows"
            msg = make_message(label, rng)
            n_words = len(msg.split())
            if (msg in seen or not (MIN_WORDS <= n_words <= MAX_WORDS)
                    or approx_tokens(msg) > MAX_APPROX_TOKENS):
                continue
            seen.add(msg)
            rows.append({"instruction": INSTRUCTION, "input": msg, "output": label})
            count += 1
    rng.shuffle(rows)
    return rows


def main() -> None:
    rng = random.Random(SEED)
    rows = build(rng)

    counts = Counter(r["output"] for r in rows)
    distinct = len({r["input"] for r in rows})
    assert len(rows) == ROWS_PER_LABEL * len(LABELS)
    assert all(counts[lab] == ROWS_PER_LABEL for lab in LABELS), counts
    assert distinct == len(rows), "duplicate inputs"
    assert all(set(r) == {"instruction", "input", "output"} for r in rows)

    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    with OUT_PATH.open("w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")

    per_label = ", ".join(f"{lab}={counts[lab]}" for lab in LABELS)
    print(f"wrote {len(rows)} rows to {OUT_PATH.relative_to(REPO_ROOT)} "
          f"({per_label}; {distinct} distinct inputs)")


if __name__ == "__main__":
    main()
