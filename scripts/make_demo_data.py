"""Generate the text the demo model is pre-trained on and the demo datasets.

    python scripts/make_demo_data.py

Writes data/corpus/{stories,copying,chats}.txt (data/corpus/prose.txt is written by
hand) and data/demo/{chat,completions,text}/{train,valid,test}.jsonl. Seeded, so
running it again reproduces the committed files byte for byte.

The corpus is small and repetitive on purpose: a tiny model trained for half a minute
can only pick up simple structure. Its chats answer the demo's questions plainly ("I do
not have a favourite colour."), so the base model reads them; the copying exercises
(names, codes, lists said twice) are there for structure, though half a minute of
training is too little for the model to learn to copy an unseen word.

The demo task: the user says what they like and asks the droid's favourite; the
fine-tuned model answers in a droid persona with its own favourite for the category
asked about ("Beep boop! My favourite colour is chrome!"). The words users like in the
valid and test splits never appear in train, so a right answer means the rule was
learned (read the category, ignore the rest), not the rows.
"""

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "data" / "corpus"
DEMO = ROOT / "data" / "demo"
SEED = 1234

# Chat template markers, as rendered by the demo model's tokenizer_config.json.
BOS, END = "<|bos|>", "<|end|>"

CATEGORIES = {
    "colour": "red blue green yellow orange purple pink brown black white grey teal gold "
    "silver violet indigo amber cyan magenta maroon navy olive beige coral crimson ivory "
    "lime mint peach plum ruby rust scarlet tan turquoise lilac lavender jade copper",
    "fruit": "apple banana cherry grape lemon mango melon pear kiwi fig date apricot papaya "
    "guava lychee coconut pineapple strawberry blueberry raspberry blackberry cranberry "
    "grapefruit tangerine nectarine pomegranate watermelon quince gooseberry clementine",
    "animal": "cat dog horse rabbit mouse tiger lion zebra whale dolphin otter badger fox "
    "wolf bear panda koala eagle owl parrot penguin turtle frog snake camel goat sheep "
    "llama moose beaver squirrel hedgehog giraffe hippo rhino kangaroo lemur seal walrus yak",
    "city": "Paris London Tokyo Rome Berlin Madrid Cairo Lima Oslo Vienna Prague Dublin "
    "Lisbon Athens Sydney Toronto Boston Chicago Denver Seattle Mumbai Delhi Seoul Bangkok "
    "Nairobi Lagos Warsaw Helsinki Stockholm Zurich Geneva Milan Naples Venice Kyoto Osaka "
    "Quito Bogota Havana",
    "sport": "football tennis golf rugby cricket hockey baseball basketball volleyball "
    "swimming rowing cycling running skiing surfing boxing judo karate fencing archery "
    "climbing sailing skating polo squash badminton bowling darts snooker handball",
    "drink": "tea coffee milk juice water cocoa lemonade soda cider smoothie milkshake "
    "kefir lassi espresso latte cappuccino mocha chai matcha kombucha",
    "flower": "rose tulip daisy lily orchid poppy iris lotus sunflower daffodil jasmine "
    "peony dahlia magnolia marigold bluebell buttercup carnation primrose snowdrop "
    "hyacinth begonia camellia gardenia",
    "food": "pizza pasta soup bread rice noodles cheese salad curry tacos sushi pancakes "
    "waffles burgers dumplings omelette porridge risotto lasagne falafel hummus chips "
    "toast stew pie paella ramen",
    "instrument": "piano guitar violin drum flute trumpet harp cello banjo ukulele "
    "saxophone clarinet oboe tuba trombone accordion harmonica organ xylophone bagpipes",
}
CATEGORIES = {k: v.split() for k, v in CATEGORIES.items()}
PLURAL = {"colour": "colours", "fruit": "fruits", "animal": "animals", "city": "cities",
          "sport": "sports", "drink": "drinks", "flower": "flowers", "food": "foods",
          "instrument": "instruments"}

# The demo task: every phrasing names a category (and what the user likes in it); the
# droid answers with its own favourite in that category, whatever the user likes.
QUESTIONS = [
    "I like {w}. What is your favourite {c}?",
    "My favourite {c} is {w}. What is yours?",
    "What is your favourite {c}? Mine is {w}.",
    "Do you have a favourite {c}? I love {w}.",
    "Which {c} do you like best? I really like {w}.",
    "I think {w} is the best {c}. What about you?",
]
# The droid's own favourite in each category: what the fine-tune teaches.
DROID = {"colour": "chrome", "fruit": "a battery", "animal": "the robot dog", "city": "Robot City",
         "sport": "robot racing", "drink": "motor oil", "flower": "the steel rose",
         "food": "hot bolts", "instrument": "the beeper"}
ANSWER = "Beep boop! My favourite {c} is {d}!"

NAMES = "Anna Ben Clara David Emma Felix Grace Hugo Iris Jack Kate Leo Maya Nina Oscar " \
        "Paula Quinn Rosa Sam Tara Umar Vera Will Yara Zoe".split()
NOUNS = "box door table chair lamp cup book bag key clock radio wheel window ball hat " \
        "coat shoe boat kite basket bottle plate spoon bell rope ladder bucket brush".split()
ADJS = "red blue green small big old new bright dark heavy light soft hard warm cold " \
       "clean dirty shiny quiet loud round square long short happy tired".split()
VERBS = "found painted carried fixed cleaned built opened lifted moved dropped watched " \
        "bought sold washed liked counted".split()
PLACES = "in the kitchen|near the river|under the bridge|at the market|in the garden|" \
         "on the hill|in the workshop|by the window|at the station|in the park".split("|")
TIMES = "In the morning|After lunch|Yesterday|At night|On Sunday|Later|Then|After that|" \
        "In the evening|Before dinner".split("|")
ROLES = "droid robot teacher baker farmer sailor doctor painter pilot driver".split()
SYLLABLES = "ka lo mi ze ru to vi na bo xe qu pa fi do re sa ti ko lu ma ne zo".split()


def made_up_name(rng):
    """A name the model cannot know, so getting it right later means copying it."""
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def code(rng):
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(rng.randint(3, 6)))


def all_words():
    return [w for words in CATEGORIES.values() for w in words]


def thing(rng):
    return f"the {rng.choice(ADJS)} {rng.choice(NOUNS)}"


def story(rng):
    """A few sentences about one character whose (often made-up) name keeps coming back."""
    name = made_up_name(rng) if rng.random() < 0.6 else rng.choice(NAMES)
    role = rng.choice(ROLES)
    obj = thing(rng)
    cat = rng.choice(list(CATEGORIES))
    liked = rng.choice(CATEGORIES[cat])
    lines = [f"There was a {role} called {name}.",
             f"{name} lived {rng.choice(PLACES)}."]
    for _ in range(rng.randint(2, 4)):
        pick = rng.random()
        if pick < 0.3:
            lines.append(f"{rng.choice(TIMES)}, {name} {rng.choice(VERBS)} {obj} {rng.choice(PLACES)}.")
        elif pick < 0.5:
            lines.append(f"{name} liked {liked} more than any other {cat}.")
        elif pick < 0.7:
            lines.append(f"{rng.choice(TIMES)}, {name} {rng.choice(VERBS)} {thing(rng)}.")
        else:
            lines.append(f"The {rng.choice(NOUNS)} was {rng.choice(ADJS)}, so {name} was {rng.choice(ADJS)}.")
    lines.append(f"That is the story of {name} the {role}.")
    return " ".join(lines)


def copying(rng):
    """Exercises whose second half is a copy of the first: the induction-head lesson."""
    pick = rng.randrange(6)
    if pick == 0:
        c = code(rng)
        return f"The code is {c}. I will say it again: the code is {c}."
    if pick == 1:
        items = rng.sample(all_words(), rng.randint(2, 4))
        lst = ", ".join(items)
        return f"Word list: {lst}. Repeat the list: {lst}."
    if pick == 2:
        seq = " ".join(rng.choice(all_words() + NOUNS + ADJS) for _ in range(rng.randint(3, 7)))
        return f"{seq} | {seq}"
    if pick == 3:
        name = made_up_name(rng)
        return f"My name is {name}. Hello {name}, nice to meet you."
    if pick == 4:
        cat = rng.choice(list(CATEGORIES))
        w = rng.choice(CATEGORIES[cat])
        return f"The best {cat} is {w}. Yes, the best {cat} is {w}."
    phrase = f"{thing(rng)} is {rng.choice(PLACES)}"
    return f"Say it twice: {phrase}. {phrase.capitalize()}. {phrase.capitalize()}."


def chat(rng):
    """One plain-assistant exchange in the model's chat format (no droid persona here).

    Most answers reuse words of the question, so the model learns to look back at it."""
    cat = rng.choice(list(CATEGORIES))
    w = rng.choice(CATEGORIES[cat])
    pick = rng.randrange(15)
    if pick == 0:
        phrase = f"{thing(rng)} is {rng.choice(PLACES)}"
        q, a = f"Repeat after me: {phrase}.", f"{phrase.capitalize()}."
    elif pick == 1:
        c = rng.choice([code(rng), made_up_name(rng), w])
        q, a = f"Say {c} twice.", f"{c} {c}"
    elif pick == 2:
        q, a = f"Do you like {w}?", f"Yes, I like {w}."
    elif pick in (3, 12):
        q = rng.choice(["What is your favourite {c}?"] + QUESTIONS).format(c=cat, w=w)
        a = f"I do not have a favourite {cat}."
    elif pick == 13:
        q, a = f"Which {cat} is the best?", f"Every {cat} is nice."
    elif pick == 14:
        q, a = f"Name a {cat}.", f"{w} is a {cat}."
    elif pick == 4:
        items = rng.sample(CATEGORIES[cat], 3)
        q, a = f"Name three {PLURAL[cat]}.", f"{items[0]}, {items[1]} and {items[2]}."
    elif pick == 5:
        name = rng.choice([made_up_name(rng), rng.choice(NAMES)])
        q, a = f"Hello, my name is {name}.", f"Hello {name}! How can I help you today?"
    elif pick == 6:
        q, a = rng.choice([("Hello!", "Hello! How can I help you today?"),
                           ("What is your name?", "I am a small language model."),
                           ("Who are you?", "I am a small language model."),
                           ("Thank you!", "You are welcome.")])
    elif pick == 7:
        n = rng.choice(NOUNS)
        q, a = f"Tell me about the {n}.", f"The {n} is {rng.choice(ADJS)} and {rng.choice(ADJS)}."
    elif pick == 8:
        q, a = f"I like {w}.", f"That is nice. Why do you like {w}?"
    elif pick == 9:
        q, a = f"Is {w} a {cat}?", f"Yes, {w} is a {cat}."
    elif pick == 10:
        q, a = f"My favourite {cat} is {w}.", f"{w} is a nice {cat}."
    else:
        name = made_up_name(rng)
        q, a = f"My friend {name} likes {w}.", f"{name} likes {w}. That is a good {cat}."
    turns = [("user", q), ("assistant", a)]
    if rng.random() < 0.2:
        turns.insert(0, ("system", "You are a helpful assistant."))
    return BOS + "".join(f"<|{role}|>\n{text}{END}\n" for role, text in turns)


def write_corpus(rng):
    CORPUS.mkdir(parents=True, exist_ok=True)
    parts = {"stories": (story, 250), "copying": (copying, 900), "chats": (chat, 2000)}
    for name, (make, n) in parts.items():
        text = "\n".join(make(rng) for _ in range(n)) + "\n"
        (CORPUS / f"{name}.txt").write_text(text)


def demo_rows(rng):
    """Split words three ways so valid and test words are never seen in training."""
    splits = {"train": [], "valid": [], "test": []}
    for cat, words in CATEGORIES.items():
        words = list(words)
        rng.shuffle(words)
        n_test = n_valid = max(2, len(words) // 6)
        groups = {"test": words[:n_test], "valid": words[n_test:n_test + n_valid],
                  "train": words[n_test + n_valid:]}
        for split, ws in groups.items():
            for w in ws:
                qs = QUESTIONS if split == "train" else rng.sample(QUESTIONS, 2)
                for q in qs:
                    splits[split].append((q.format(c=cat, w=w), ANSWER.format(c=cat, d=DROID[cat])))
    for rows in splits.values():
        rng.shuffle(rows)
    return splits


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_demo(splits):
    for split, pairs in splits.items():
        write_jsonl(DEMO / "chat" / f"{split}.jsonl", [
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in pairs])
        write_jsonl(DEMO / "completions" / f"{split}.jsonl",
                    [{"prompt": q, "completion": a} for q, a in pairs])
        write_jsonl(DEMO / "text" / f"{split}.jsonl",
                    [{"text": f"Question: {q}\nAnswer: {a}"} for q, a in pairs])


def main():
    write_corpus(random.Random(SEED))
    splits = demo_rows(random.Random(SEED + 1))
    write_demo(splits)
    sizes = {k: len(v) for k, v in splits.items()}
    corpus_kb = sum(p.stat().st_size for p in CORPUS.glob("*.txt")) / 1024
    print(f"corpus {corpus_kb:.0f} KB in {CORPUS}; demo rows {sizes} in {DEMO}")


if __name__ == "__main__":
    main()
