"""Label vocabularies shared by several face datasets, so that cross-dataset tables line up.

Every built-in face dataset names its demographic columns ``gender`` (values ``Male`` /
``Female``) and ``race`` (the 4-race view shared by FairFace, UTKFace and LFWA+: ``White``,
``Black``, ``Asian``, ``Indian``); CelebA keeps its own attribute name ``Male``. A vocabulary
only one dataset uses lives in that dataset's module (FairFace's 7 races and ages, UTKFace's
``Others``, LFWA+'s ``Undefined``, CelebA's gender-independent attributes).

Cross-dataset evaluation maps a run's target through the concepts each dataset class declares
(``Dataset.target_concepts``) or, failing that, the same target name (CelebA and LFWA+
``Smiling``); class names are matched after :func:`canonical_class` (``man`` = ``Male`` ...).
"""

from __future__ import annotations

from typing import Iterable

GENDER_CLASSES = ["Female", "Male"]  # sorted, as a generic manifest with these values would give
GENDER_ORDER = ["Male", "Female"]  # display order of groups (the paper's tables: M then F)

RACE4 = ["White", "Black", "Asian", "Indian"]
#: display order of the race-4 view's groups (FairFace's race-7 order places Indian before Asian)
RACE4_ORDER = ["White", "Black", "Indian", "Asian"]

#: names for binary attribute classes (CelebA, LFWA+ attributes): index 1 = attribute present
BINARY_CLASSES = ["no", "yes"]

#: the 40 CelebA attributes, in the official file's order (LFWA+'s lfw_att_40.mat uses the same names)
CELEBA_ATTRIBUTES = [
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
]

_CLASS_SYNONYMS = {
    "male": "Male", "man": "Male", "m": "Male", "men": "Male",
    "female": "Female", "woman": "Female", "f": "Female", "women": "Female",
    "yes": "yes", "1": "yes", "true": "yes", "present": "yes",
    "no": "no", "0": "no", "-1": "no", "false": "no", "absent": "no",
}


def canonical_class(name: str) -> str:
    """A class name in the shared vocabulary (``man`` -> ``Male``, ``-1`` -> ``no``); others unchanged."""
    text = str(name).strip()
    return _CLASS_SYNONYMS.get(text.lower(), text)


def concept_of(concepts: dict[str, str], target: str) -> str:
    """The shared concept a dataset's target stands for (its ``target_concepts``), else the target's name."""
    return next((concept for concept, column in concepts.items() if column == target), target)


def mapped_target(run_concepts: dict[str, str], run_target: str, eval_concepts: dict[str, str],
                  eval_targets: Iterable[str]) -> str | None:
    """The eval dataset's target that means the run's target, or None (``*_concepts``: each
    dataset's ``target_concepts``)."""
    eval_targets = list(eval_targets)
    concept = concept_of(run_concepts, run_target)
    candidate = eval_concepts.get(concept)
    for name in (candidate, run_target, concept):
        if name is not None and name in eval_targets:
            return name
    return None


def class_mapping(run_classes: list[str], eval_classes: list[str]) -> list[int] | None:
    """For each eval class, the index of the run's class of the same (canonical) name; None unless a bijection."""
    run_index = {}
    for i, name in enumerate(run_classes):
        run_index.setdefault(canonical_class(name), i)
    mapping = [run_index.get(canonical_class(name)) for name in eval_classes]
    if len(run_classes) != len(eval_classes) or None in mapping or len(set(mapping)) != len(mapping):
        return None
    return mapping  # type: ignore[return-value]
