"""Write `word_tasks_train.jsonl` and `word_tasks_eval.jsonl`: a small chat dataset about English words.

Four tasks, each answered by one fixed sentence: the plural of a noun, the past tense of a verb,
the comparative of an adjective, and the opposite of a word. Fixed answers are quick to learn: even
a tiny random model lowers its loss on the replies clearly in a few epochs. Every training word is
asked in two wordings; the evaluation file asks about words that never appear in the same task in
the training file (for opposites: pairs seen in neither direction), so it measures whether a model
learned the rule, not the list.

The output depends on nothing but this file: run it again and both files come out byte-identical.

    python datasets/make_word_tasks.py            # rewrites the two files beside this script
    python datasets/make_word_tasks.py --check    # exit 1 if the files differ from what it would write
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 0
EVAL_PER_TASK = 12  # held-out words per task (opposites: held-out pairs, asked both ways)
TRAIN_WORDINGS = 2  # a training word is asked in this many of its task's wordings (an evaluation word: one)


def pairs(text: str) -> list[tuple[str, str]]:
    """'a:b c:d e' -> [(a, b), (c, d), (e, e)]; an underscore stands for a space ('more_famous')."""
    out = []
    for item in text.split():
        a, _, b = item.partition(":")
        out.append((a.replace("_", " "), (b or a).replace("_", " ")))
    return out


PLURALS = pairs("""
cat:cats dog:dogs book:books tree:trees car:cars house:houses bird:birds apple:apples chair:chairs
table:tables pen:pens cup:cups door:doors hat:hats lamp:lamps road:roads river:rivers ship:ships
star:stars song:songs hand:hands bed:beds boat:boats cake:cakes coat:coats desk:desks egg:eggs
farm:farms flag:flags frog:frogs game:games gift:gifts girl:girls boy:boys key:keys day:days toy:toys
horse:horses king:kings lake:lakes map:maps moon:moons nest:nests park:parks plant:plants ring:rings
rock:rocks shoe:shoes sock:socks spoon:spoons stone:stones train:trains wall:walls window:windows
word:words garden:gardens pencil:pencils planet:planets rabbit:rabbits ticket:tickets village:villages
cloud:clouds bottle:bottles candle:candles letter:letters button:buttons mountain:mountains
island:islands kitten:kittens ladder:ladders basket:baskets blanket:blankets carrot:carrots
dragon:dragons forest:forests hammer:hammers jacket:jackets lemon:lemons mirror:mirrors pillow:pillows
rocket:rockets tiger:tigers tunnel:tunnels whale:whales zebra:zebras
box:boxes bus:buses church:churches dish:dishes fox:foxes glass:glasses watch:watches brush:brushes
match:matches dress:dresses bench:benches beach:beaches
city:cities baby:babies party:parties story:stories lady:ladies cherry:cherries family:families
puppy:puppies body:bodies country:countries
leaf:leaves knife:knives wolf:wolves half:halves shelf:shelves loaf:loaves life:lives thief:thieves
calf:calves wife:wives
man:men woman:women child:children mouse:mice tooth:teeth foot:feet goose:geese person:people
ox:oxen sheep fish deer cactus:cacti fungus:fungi potato:potatoes tomato:tomatoes hero:heroes
echo:echoes
""")

PAST = pairs("""
walk:walked talk:talked jump:jumped play:played open:opened clean:cleaned cook:cooked help:helped
call:called ask:asked work:worked wash:washed paint:painted visit:visited start:started
finish:finished listen:listened answer:answered want:wanted need:needed look:looked learn:learned
climb:climbed kick:kicked pull:pulled push:pushed rain:rained turn:turned fill:filled
like:liked love:loved dance:danced smile:smiled close:closed move:moved live:lived bake:baked
hope:hoped use:used change:changed share:shared arrive:arrived decide:decided invite:invited
stop:stopped plan:planned drop:dropped shop:shopped hug:hugged skip:skipped
carry:carried study:studied cry:cried try:tried hurry:hurried worry:worried
go:went see:saw eat:ate drink:drank run:ran swim:swam sing:sang write:wrote read take:took give:gave
make:made come:came find:found think:thought buy:bought bring:brought teach:taught catch:caught
fly:flew grow:grew know:knew draw:drew throw:threw speak:spoke break:broke choose:chose drive:drove
ride:rode begin:began sit:sat stand:stood sleep:slept keep:kept feel:felt leave:left meet:met
tell:told sell:sold win:won lose:lost fall:fell hold:held build:built send:sent spend:spent pay:paid
say:said get:got put cut hit let become:became forget:forgot hide:hid bite:bit wake:woke wear:wore
steal:stole freeze:froze shake:shook blow:blew hang:hung dig:dug feed:fed lead:led sink:sank
""")

COMPARATIVES = pairs("""
tall:taller short:shorter small:smaller fast:faster slow:slower cold:colder warm:warmer old:older
young:younger long:longer strong:stronger weak:weaker kind:kinder loud:louder quiet:quieter
bright:brighter dark:darker clean:cleaner rich:richer deep:deeper high:higher low:lower soft:softer
hard:harder cheap:cheaper sweet:sweeter fresh:fresher thick:thicker light:lighter near:nearer
large:larger wide:wider safe:safer nice:nicer late:later brave:braver wise:wiser rare:rarer pale:paler
big:bigger hot:hotter thin:thinner sad:sadder wet:wetter red:redder
happy:happier easy:easier busy:busier funny:funnier heavy:heavier early:earlier pretty:prettier
lucky:luckier noisy:noisier dirty:dirtier angry:angrier lazy:lazier tiny:tinier dry:drier
good:better bad:worse far:farther
beautiful:more_beautiful careful:more_careful famous:more_famous modern:more_modern
expensive:more_expensive important:more_important difficult:more_difficult
interesting:more_interesting comfortable:more_comfortable dangerous:more_dangerous
popular:more_popular useful:more_useful
""")

OPPOSITES = pairs("""
hot:cold big:small fast:slow happy:sad light:dark open:closed full:empty early:late new:old rich:poor
strong:weak hard:soft high:low long:short wet:dry clean:dirty loud:quiet thick:thin easy:difficult
cheap:expensive true:false wide:narrow deep:shallow sweet:sour smooth:rough safe:dangerous up:down
left:right in:out on:off day:night black:white inside:outside above:below before:after push:pull
buy:sell win:lose give:take come:go laugh:cry start:finish remember:forget always:never
everything:nothing friend:enemy question:answer north:south east:west summer:winter top:bottom
front:back first:last more:less many:few king:queen boy:girl brother:sister arrive:leave
accept:refuse ancient:modern asleep:awake polite:rude generous:selfish visible:invisible
possible:impossible correct:incorrect honest:dishonest tidy:messy
""")

TASKS = {  # task: (word pairs, question wordings, answer sentence)
    "plural": (PLURALS, ["What is the plural of {w}?", "Give the plural form of the word {w}.",
                         "One {w}, two ... what?"], "The plural of {w} is {x}."),
    "past": (PAST, ["What is the past tense of {w}?", "Put the verb {w} in the past tense.",
                    "Yesterday I ... ({w}). Which form fits?"], "The past tense of {w} is {x}."),
    "comparative": (COMPARATIVES, ["What is the comparative of {w}?", "Give the comparative form of {w}.",
                                   "This one is {w}, but that one is even ... what?"],
                    "The comparative of {w} is {x}."),
    "opposite": (OPPOSITES, ["What is the opposite of {w}?", "Give me a word that means the opposite of {w}.",
                             "What is the antonym of {w}?"], "The opposite of {w} is {x}."),
}


def chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def examples(seed: int = SEED) -> dict[str, list[dict]]:
    """{"train": [...], "eval": [...]}: the wordings of each word's question are a seeded choice."""
    rng = random.Random(seed)
    out: dict[str, list[dict]] = {"train": [], "eval": []}
    for task, (items, questions, answer) in TASKS.items():
        held = set(rng.sample(range(len(items)), EVAL_PER_TASK if task != "opposite" else EVAL_PER_TASK // 2))
        asked = [(w, x, i in held) for i, (w, x) in enumerate(items)]
        if task == "opposite":  # both directions of a pair, on the same side of the split
            asked += [(x, w, i in held) for i, (w, x) in enumerate(items)]
        for w, x, is_eval in asked:
            for q in rng.sample(questions, 1 if is_eval else TRAIN_WORDINGS):
                out["eval" if is_eval else "train"].append(chat(q.format(w=w), answer.format(w=w, x=x)))
    for split in out.values():
        rng.shuffle(split)
    return out


def render(split: list[dict]) -> str:
    return "".join(json.dumps(ex, ensure_ascii=False) + "\n" for ex in split)


def main(argv: list[str]) -> int:
    splits = examples()
    stale = []
    for name, split in splits.items():
        path, text = HERE / f"word_tasks_{name}.jsonl", render(split)
        if "--check" in argv:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            with open(path, "w", encoding="utf-8", newline="\n") as f:  # the same bytes on every system
                f.write(text)
            print(f"{path.name}: {len(split)} examples")
    if stale:
        print(f"out of date: {', '.join(stale)} (run python datasets/make_word_tasks.py)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
