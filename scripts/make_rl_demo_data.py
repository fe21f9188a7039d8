"""Write the RL and preference demo datasets: data/demo/grpo, preference, online and ftpo.

    python scripts/make_rl_demo_data.py            # deterministic; rewrites both folders

The task: "Name three fruits." (nine categories, a few phrasings). A GRPO row's answer
lists the acceptable items separated by "|"; `droidft_demo_reward` gives partial credit:
0.4 for answering with a list of three, plus 0.2 per acceptable item named.

Why this task: the demo model is tiny. On tasks with one right answer (arithmetic, copying
a sentence, R1-style <answer> tags) every completion of the untrained model scores 0, so
every group has zero reward variance and GRPO has nothing to learn from (measured in
bench/bench_grpo_demo.py). Asked for three fruits it sometimes answers with a list of three
(mostly made-up words) and sometimes with something else, so the partial credit differs
inside a group from the very first step, and GRPO visibly raises the mean reward by
teaching the list shape, then real items. The valid split uses a phrasing the train split
does not, so validation reward measures more than memorised prompts.

The preference set teaches the same thing: chosen = three items of the category, rejected =
the kind of answer the untrained model gives (another reply shape, or items of another
category). The online set (online_dpo, xpo, ppo, rlhf_reinforce) has the GRPO rows' prompts
and answers: the policy writes both completions, and the reward judge scores them with
`droidft_demo_reward`, so "the judge's choice" is the same partial credit.

The FTPO set (Antidoom form, one next token): the demo model opens every reply to the chat
demo's questions with "I" ("I do not have a favourite colour."). Each row is such a question
rendered with the demo model's chat template, "I" as the rejected first token and "My" (and
"Yes" for yes/no questions) as the chosen ones; its splits take their questions from the chat
demo's splits, so valid and test hold words the train split never has.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "data" / "demo"
SEED = 7

CATEGORIES = {
    "animals": "badger bear beaver camel cat cow dog dolphin duck fox frog giraffe goat hippo horse "
               "koala lemur lion llama moose mouse otter owl panda parrot pig rabbit rhino seal sheep "
               "snake squirrel tiger turtle whale wolf yak zebra",
    "cities": "Amsterdam Athens Bangkok Berlin Bogota Boston Cairo Delhi Dublin Lagos Lima Lisbon "
              "London Madrid Nairobi Oslo Paris Prague Quito Rome Seoul Sydney Tokyo Vienna Warsaw",
    "colours": "amber beige black blue brown coral crimson cyan gold green grey indigo ivory lavender "
               "lilac magenta maroon navy olive orange pink purple red scarlet silver teal turquoise "
               "violet white yellow",
    "drinks": "cider cocoa coffee espresso juice kefir lassi lemonade matcha milk smoothie soda tea "
              "water",
    "flowers": "aster begonia camellia carnation crocus daffodil dahlia daisy gardenia hyacinth iris "
               "jasmine lilac lily lotus marigold orchid pansy peony poppy primrose rose sunflower "
               "tulip violet",
    "foods": "bread burrito cheese curry dumplings falafel lasagne noodles omelette pancakes pasta "
             "pizza porridge ramen rice risotto salad soup sushi tacos",
    "fruits": "apple apricot banana blackberry blueberry cherry coconut fig grape guava kiwi lemon "
              "lime mango melon orange papaya peach pear pineapple plum pomegranate raspberry "
              "strawberry watermelon",
    "instruments": "banjo bass cello clarinet drum flute guitar harp oboe organ piano saxophone "
                   "sitar trombone trumpet tuba ukulele viola violin xylophone",
    "sports": "badminton baseball basketball boxing cricket cycling fencing football golf hockey "
              "judo karate rowing rugby skiing snooker surfing swimming tennis volleyball",
}
TRAIN_PHRASINGS = ("Name three {c}.", "Can you name three {c}?", "Please name three {c}.",
                   "Name three {c}, please.")
VALID_PHRASING = "Tell me three {c}."
TEST_PHRASING = "Which three {c} can you name?"
TRAIN_REPEATS = 3  # each (category, phrasing) pair this many times: 9 x 4 x 3 = 108 rows
FTPO_ROWS = {"train": 96, "valid": 12, "test": 12}
BAD_REPLIES = ("That is nice. Why do you like {x}?", "Yes, I like {x}.", "I do not know.",
               "{x} is a nice {c1}.")


def items(category: str) -> list[str]:
    return CATEGORIES[category].split()


def grpo_row(category: str, phrasing: str) -> dict:
    return {"prompt": phrasing.format(c=category), "answer": "|".join(items(category)),
            "type": category}


def three(rng: random.Random, category: str) -> str:
    a, b, c = rng.sample(items(category), 3)
    return f"{a}, {b} and {c}."


def preference_row(category: str, phrasing: str, rng: random.Random) -> dict:
    if rng.random() < 0.5:
        other = rng.choice([c for c in CATEGORIES if c != category])
        rejected = three(rng, other)
    else:
        rejected = rng.choice(BAD_REPLIES).format(x=rng.choice(items(category)), c1=category.rstrip("s"))
        rejected = rejected[0].upper() + rejected[1:]
    return {"prompt": phrasing.format(c=category), "chosen": three(rng, category), "rejected": rejected}


def ftpo_rows(split: str, limit: int) -> list[dict]:
    from droidft.data import demo_chat_prompt

    rows = []
    with open(OUT / "chat" / f"{split}.jsonl", encoding="utf-8") as fh:
        for line in list(fh)[:limit]:
            question = json.loads(line)["messages"][0]["content"]
            chosen = ["Yes", "My"] if question.startswith("Do you") else ["My"]
            rows.append({"context_with_chat_template": demo_chat_prompt(question),
                         "rejected_decoded": "I", "multi_chosen_decoded": chosen})
    return rows


def write(folder: Path, split: str, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def main() -> int:
    rng = random.Random(SEED)
    pairs = {
        "train": [(c, p) for _ in range(TRAIN_REPEATS) for p in TRAIN_PHRASINGS for c in CATEGORIES],
        "valid": [(c, VALID_PHRASING) for c in CATEGORIES],
        "test": [(c, TEST_PHRASING) for c in CATEGORIES],
    }
    for split, chosen in pairs.items():
        if split == "train":
            rng.shuffle(chosen)
        write(OUT / "grpo", split, [grpo_row(c, p) for c, p in chosen])
        write(OUT / "preference", split, [preference_row(c, p, rng) for c, p in chosen])
        write(OUT / "online", split, [grpo_row(c, p) for c, p in chosen])
        write(OUT / "ftpo", split, ftpo_rows(split, FTPO_ROWS[split]))
    print(f"wrote {OUT / 'grpo'}, {OUT / 'preference'}, {OUT / 'online'} and {OUT / 'ftpo'}: "
          + ", ".join(f"{split} {len(rows)}" for split, rows in pairs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
