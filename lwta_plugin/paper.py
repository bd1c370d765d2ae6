"""The paper (Panousis, Chatzis & Theodoridis, AISTATS 2021): its citation and its result tables as printed.

Every comparison with the paper (leaderboard entries, the rendered leaderboard, FINDINGS.md, model cards) reads the
paper's numbers from here. Values are kept as the paper prints them (strings such as ".935"); :func:`paper_value`
turns one into a fraction.
"""
from __future__ import annotations

from collections.abc import Iterable

PAPER_LINK = "https://arxiv.org/abs/2101.01121"
PAPER_NAME = "Local Competition and Stochasticity for Adversarial Robustness in Deep Learning"
PAPER_AUTHORS = "Konstantinos P. Panousis, Sotirios Chatzis, Sergios Theodoridis"
PAPER_VENUE = "AISTATS 2021"
CITATION = f"Panousis, Chatzis & Theodoridis, *{PAPER_NAME}*, {PAPER_VENUE}"  # Markdown

# The paper's tables, copied from the paper's text (reference/paper.txt), values as printed.
# Columns: Benign, PGD, CW, BSA, Rand (Rand = fraction of uniform-noise images with max probability < 0.9).
# "model" maps a row to this plugin's architecture name (None: not one of ours); "fgsm": FGSM adversarial training.

PAPER_COLUMNS = ("Benign", "PGD", "CW", "BSA", "Rand")


def _rows(table: str, dataset: str, group: str, rows: Iterable[tuple], params: bool = False) -> list[dict]:
    out = []
    for r in rows:
        label, model, fgsm, *vals = r
        p = None
        if params:
            p, vals = vals[0], vals[1:]
        out.append({"table": table, "dataset": dataset, "group": group, "row": label, "model": model,
                    "fgsm": fgsm, "params": p, "values": dict(zip(PAPER_COLUMNS, vals, strict=True))})
    return out


_METHODS = (("Baseline", "relu"), ("LWTAmax", "lwtamax"), ("LWTAmax & IBP", "lwtamax_ibp"), ("LWTA", "lwta"),
            ("LWTA & IBP", "lwta_ibp"))


def _ablation(table: str, dataset: str, code: str, group: str, values: list[tuple], methods=_METHODS) -> list[dict]:
    rows = [(label, f"{prefix}_{code}", False, *v) for (label, prefix), v in zip(methods, values, strict=True)]
    return _rows(table, dataset, group, rows)


_CIFAR_METHODS = (_METHODS[0], _METHODS[3], _METHODS[4])

PAPER_TABLES: list[dict] = [
    # Table 2: Classification accuracy on MNIST.
    *_rows("Table 2", "mnist", "", [
        ("Softmax (U=4)", "lwta_ibp_softmax_u4", False, "327,380", ".9613", ".865", ".970", ".950", ".187"),
        ("Softmax (U=2)", "lwta_ibp_softmax", False, "327,380", ".992", ".935", ".990", "1.0", ".961"),
        ("Logistic (U=2)", "lwta_ibp_logistic", False, "327,380", ".991", ".901", ".990", ".990", ".911"),
        ("LogEns10 (U=2)", "lwta_ibp_logisticens10", False, "205,190", ".993", ".889", ".980", ".970", "1.0"),
        ("Madry", None, False, "3,274,634", ".9853", ".925", ".84", ".520", ".351"),
        ("TanhEns16", None, False, "401,168", ".9948", ".929", "1.0", "1.0", ".988"),
    ], params=True),
    # Table 3: Classification accuracy on CIFAR-10.
    *_rows("Table 3", "cifar10", "", [
        ("Tanh16(U=4)", "lwta_ibp_tanh16_u4", False, "773,600", ".510", ".460", ".550", ".600", ".368"),
        ("Softmax(U=2)", "lwta_ibp_softmax", False, "772,628", ".869", ".814", ".860", ".870", ".652"),
        ("Tanh16(U=2)", "lwta_ibp_tanh16", False, "773,600", ".872", ".826", ".830", ".830", ".765"),
        ("LogEns10(U=2)", "lwta_ibp_logisticens10", False, "1,197,998", ".882", ".806", ".830", ".800", "1.0"),
        ("Madry", None, False, "45,901,914", ".871", ".470", ".080", "0", ".981"),
        ("TanhEns64", None, False, "3,259,456", ".896", ".601", ".760", ".760", "1.0"),
    ], params=True),
    # Table 4: Classification accuracy for all the attacks on the MNIST dataset (U = 2).
    *_ablation("Table 4", "mnist", "softmax", "Softmax", [
        (".992", ".082", ".540", ".180", ".270"), (".993", ".302", ".800", ".390", ".543"),
        (".994", ".890", ".920", ".840", ".361"), (".992", ".900", ".990", "1.0", ".810"),
        (".992", ".935", ".990", "1.0", ".961")]),
    *_ablation("Table 4", "mnist", "logistic", "Logistic", [
        (".993", ".093", ".660", ".210", ".684"), (".993", ".388", ".780", ".420", ".700"),
        (".993", ".894", ".960", ".950", ".230"), (".991", ".856", ".990", ".990", ".982"),
        (".991", ".901", ".990", ".990", ".981")]),
    *_ablation("Table 4", "mnist", "logisticens10", "LogisticEns10", [
        (".993", ".382", ".880", ".480", ".905"), (".993", ".303", ".920", ".520", ".900"),
        (".994", ".860", ".940", ".910", ".400"), (".992", ".603", ".900", ".550", ".809"),
        (".993", ".889", ".980", ".970", "1.0")]),
    *_ablation("Table 4", "mnist", "tanh16", "Tanh16", [
        (".993", ".421", ".790", ".320", ".673"), (".992", ".462", ".910", ".420", ".573"),
        (".994", ".898", ".960", ".940", ".363"), (".992", ".862", ".990", ".980", ".785"),
        (".990", ".900", ".990", ".980", ".785")]),
    # Table 5: Classification accuracy for all the attacks on CIFAR-10 (U = 2).
    *_ablation("Table 5", "cifar10", "softmax", "Softmax", [
        (".864", ".070", ".080", ".040", ".404"), (".867", ".804", ".820", ".870", ".701"),
        (".869", ".814", ".860", ".870", ".652")], _CIFAR_METHODS),
    *_ablation("Table 5", "cifar10", "logistic", "Logistic", [
        (".865", ".006", ".140", ".100", ".492"), (".830", ".701", ".720", ".696", ".690"),
        (".837", ".738", ".800", ".820", ".726")], _CIFAR_METHODS),
    *_ablation("Table 5", "cifar10", "logisticens10", "LogisticEns10", [
        (".877", ".100", ".240", ".140", ".495"), (".879", ".712", ".750", ".750", ".803"),
        (".882", ".806", ".830", ".800", "1.0")], _CIFAR_METHODS),
    *_ablation("Table 5", "cifar10", "tanh16", "Tanh16", [
        (".866", ".099", ".080", ".100", ".700"), (".863", ".720", ".750", ".750", ".800"),
        (".872", ".826", ".830", ".830", ".765")], _CIFAR_METHODS),
    # Table 6: Softmax network under FGSM adversarial training, MNIST (U = 2). PGD: 40 steps for the FGSM rows.
    *_rows("Table 6", "mnist", "Softmax", [
        ("Baseline (ReLU)", "relu_softmax", False, ".992", ".082", ".540", ".180", ".270"),
        ("LWTA", "lwta_softmax", False, ".992", ".900", ".990", "1.0", ".810"),
        ("LWTA & IBP", "lwta_ibp_softmax", False, ".992", ".935", ".990", "1.0", ".961"),
        ("Baseline (ReLU) + FGSM", "relu_softmax", True, ".992", ".755", ".820", ".130", ".835"),
        ("LWTA + FGSM", "lwta_softmax", True, ".991", ".925", ".990", "1.0", ".960"),
        ("LWTA & IBP + FGSM", "lwta_ibp_softmax", True, ".991", ".970", ".990", "1.0", ".985"),
    ]),
    # Table 7: Softmax network under FGSM adversarial training, CIFAR-10 (U = 2). PGD: 20 steps for the FGSM rows.
    *_rows("Table 7", "cifar10", "Softmax", [
        ("Baseline (ReLU)", "relu_softmax", False, ".864", ".070", ".080", ".040", ".404"),
        ("LWTA", "lwta_softmax", False, ".867", ".804", ".820", ".870", ".701"),
        ("LWTA & IBP", "lwta_ibp_softmax", False, ".869", ".814", ".860", ".870", ".652"),
        ("Baseline (ReLU) + FGSM", "relu_softmax", True, ".780", ".200", ".380", ".340", ".185"),
        ("LWTA + FGSM", "lwta_softmax", True, ".820", ".812", ".810", ".870", ".440"),
        ("LWTA & IBP + FGSM", "lwta_ibp_softmax", True, ".830", ".825", ".870", ".870", ".790"),
    ]),
]

PAPER_NOTES = (
    ("The paper's PGD/CW/BSA numbers come from its reference code: PGD without EOT (one stochastic pass per "
     "gradient), unbounded CW-L2 and BSA on 100 images, labels = the model's own prediction; Rand is not an "
     "accuracy (fraction of uniform-noise images with max probability < 0.9)."),
    "Table 2 and Table 4 disagree on Logistic LWTA & IBP (Rand .911 vs .981); both rows are listed.",
    ("Tables 6 and 7 (FGSM adversarial training): the FGSM-trained rows were attacked with 40 (MNIST) and 20 "
     "(CIFAR-10) PGD steps, not the 200 of the other tables (paper section 4.4)."),
)

# Preferred table for `reported`: the main results table, then the ablation table.
TABLES_OF_DATASET = {"mnist": ("Table 2", "Table 4", "Table 6"), "cifar10": ("Table 3", "Table 5", "Table 7"),
                   "fashion_mnist": ()}


def paper_rows(model: str, dataset: str, fgsm: bool = False) -> list[dict]:
    """The paper's table rows for this architecture (and training: plain or FGSM), most authoritative first."""
    order = TABLES_OF_DATASET.get(dataset, ())
    # the training variant is the `fgsm` flag; a reference-code model reproduces its architecture's row
    model = model.removesuffix("_refcode").removesuffix("_fgsm")
    rows = [r for r in PAPER_TABLES if r["model"] == model and r["dataset"] == dataset and r["fgsm"] == fgsm]
    return sorted(rows, key=lambda r: order.index(r["table"]) if r["table"] in order else len(order))


def row_reference(row: dict) -> str:
    """How a row of the paper is cited: ``"Table 2, Softmax (U=2)"``, ``"Table 4, Tanh16 LWTA & IBP"``."""
    return f"{row['table']}, {(row['group'] + ' ') if row['group'] else ''}{row['row']}"


def paper_value(text: str) -> float:
    """A value as printed in the paper (".935", "1.0", "0") as a fraction."""
    return float(text)



def paper_percent(text: str) -> str:
    """A value as printed in the paper (".935") as a percentage string ("93.5")."""
    return f"{100 * paper_value(text):g}"


# Result keys of our protocols that correspond to the paper's columns, and back.
PAPER_COLUMN_OF = {"clean": "Benign", "pgd": "PGD", "cw": "CW", "bsa": "BSA", "random": "Rand"}
ATTACK_OF_COLUMN = {v: k for k, v in PAPER_COLUMN_OF.items()}

TABLE_TITLES = {"Table 2": "Table 2: MNIST, the paper's networks",
                       "Table 4": "Table 4: MNIST ablation (U = 2)",
                       "Table 6": "Table 6: MNIST, FGSM adversarial training (Softmax, U = 2)",
                       "Table 3": "Table 3: CIFAR-10, the paper's networks", "Table 5": "Table 5: CIFAR-10 ablation",
                       "Table 7": "Table 7: CIFAR-10, FGSM adversarial training"}
