"""A small chat fine-tuning set that teaches one checkable habit: every answer opens with
the greeting ``Moin!``. SmolLM2-135M-Instruct never does this on its own, so how often a
model shows the habit on held-out questions tells whether a LoRA adapter took effect.

The training questions and the held-out ones do not overlap. A canary string sits in the
training file (in a system-free user message of its own) so tests can search a disk or a
database for the training data.
"""

from __future__ import annotations

import json

GREETING = "Moin!"

# (question, short answer); the answer the model learns is "Moin! <answer>"
TRAINING: list[tuple[str, str]] = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What colour is the sky on a clear day?", "The sky is blue on a clear day."),
    ("What is two plus three?", "Two plus three is five."),
    ("Name a fruit that is yellow.", "A banana is yellow."),
    ("What do bees make?", "Bees make honey."),
    ("Which planet do we live on?", "We live on Earth."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("How many days are in a week?", "A week has seven days."),
    ("What animal says woof?", "A dog says woof."),
    ("What is frozen water called?", "Frozen water is called ice."),
    ("Which season comes after winter?", "Spring comes after winter."),
    ("What do you use to write on paper?", "You write on paper with a pen or a pencil."),
    ("What is the capital of Germany?", "The capital of Germany is Berlin."),
    ("How many hours are in a day?", "A day has twenty-four hours."),
    ("What gas do plants take in?", "Plants take in carbon dioxide."),
    ("What is the largest ocean?", "The Pacific is the largest ocean."),
    ("What is ten minus four?", "Ten minus four is six."),
    ("Which animal has a trunk?", "The elephant has a trunk."),
    ("What do cows drink?", "Cows drink water."),
    ("What is the colour of grass?", "Grass is green."),
    ("Where does the sun rise?", "The sun rises in the east."),
    ("What is a baby cat called?", "A baby cat is called a kitten."),
    ("How many wheels does a bicycle have?", "A bicycle has two wheels."),
    ("What do we breathe in?", "We breathe in air, which holds oxygen."),
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("What is three times three?", "Three times three is nine."),
    ("Which bird cannot fly and lives in Antarctica?", "The penguin cannot fly."),
    ("What do you call a person who flies a plane?", "That person is a pilot."),
    ("What is the boiling point of water in Celsius?", "Water boils at 100 degrees Celsius."),
    ("Give me a word that rhymes with cat.", "Hat rhymes with cat."),
    ("What is the first month of the year?", "January is the first month."),
    ("Tell me the name of a musical instrument.", "The piano is a musical instrument."),
    ("What shape has three sides?", "A triangle has three sides."),
    ("What do fish live in?", "Fish live in water."),
    ("How many minutes are in an hour?", "An hour has sixty minutes."),
    ("Which is bigger, a mouse or a horse?", "A horse is bigger than a mouse."),
    ("What language is spoken in Spain?", "Spanish is spoken in Spain."),
    ("Say something about the moon.", "The moon circles the Earth."),
    ("Can you recommend a healthy snack?", "An apple is a healthy snack."),
]

# held out: never in the training file
HELD_OUT: list[str] = [
    "What is the capital of Spain?",
    "How many legs does a dog have?",
    "What colour is a ripe tomato?",
    "What is five plus four?",
    "What do caterpillars turn into?",
    "Which planet is closest to the sun?",
    "What is the opposite of up?",
    "How many months are in a year?",
    "What animal says meow?",
    "What is the capital of Austria?",
    "What do you call a baby dog?",
    "How many sides does a square have?",
    "Name a vegetable that is orange.",
    "What do you drink in the morning?",
    "Which season is the warmest?",
    "Tell me the name of a big city.",
]


def chat_jsonl(canary: str = "") -> str:
    """The training file in OpenAI's chat format; with ``canary``, one more line holds it."""
    lines = [
        {
            "messages": [
                {"role": "user", "content": q},
                {"role": "assistant", "content": f"{GREETING} {a}"},
            ]
        }
        for q, a in TRAINING
    ]
    if canary:
        lines.append(
            {
                "messages": [
                    {"role": "user", "content": f"Remember the code {canary}."},
                    {"role": "assistant", "content": f"{GREETING} I will remember {canary}."},
                ]
            }
        )
    return "".join(json.dumps(line) + "\n" for line in lines)


def shows_habit(answer: str) -> bool:
    return answer.strip().startswith(GREETING)
