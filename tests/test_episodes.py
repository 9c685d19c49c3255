"""Episodes from files (`--episodes-file`, Frozen's questions): every way an episode can be malformed is one
SpaeInputError that names the episode and what is wrong."""

import pytest

from spae import SpaeInputError
from spae.prompting import Episode

GOOD = {"id": "e1", "classes": ["cat", "dog"], "support": [["cat", 0], ["dog", 1]], "query": [["dog", 2]]}


def test_a_well_formed_episode_round_trips():
  ep = Episode.from_json(GOOD, "ep")
  assert ep.labels == ("cat", "dog") and ep.support == ((0, 0), (1, 1)) and ep.query == ((1, 2),)
  assert Episode.from_json(ep.to_json()) == ep
  captioned = dict(GOOD, captions=["This is a cat.", "this is a Dog."], question="What is this? ")
  ep = Episode.from_json(captioned, "ep")
  assert ep.ending == "." and ep.caption_prefixes() == {0: "This is a", 1: "this is a"}
  assert ep.question == "What is this?"


@pytest.mark.parametrize("change, message", [
    ({"id": None, "classes": ["cat"], "support": [["cow", 0]]}, r"ep: missing field or unknown class 'cow'"),
    ({"query": None}, r"ep: missing field or unknown class 'query'"),
    ({"support": 5}, r"ep: malformed episode .*support/query are lists of \[class, image\]"),
    ({"classes": ["cat", "cat"], "support": [["cat", 0]], "query": [["cat", 1]]}, r"ep: classes repeat"),
    ({"labels": ["a"]}, r"ep: 1 labels for 2 classes"),
    ({"labels": ["Cat", "cat."]}, r"ep: labels \['Cat', 'cat.'\] are not distinct after normalisation"),
    ({"support": []}, r"ep: needs at least one support and one query image"),
    ({"captions": ["This is a cat."], "question": "Q?"}, r"ep: captions need one text per support image \(1 for 2\)"),
    ({"captions": ["This is a cat.", "This is a dog."], "question": " "}, r"and a non-empty question"),
    ({"captions": ["A cat.", "This is a dog."], "question": "Q?"}, r"ep: caption 'A cat.' does not read 'This is a"),
    ({"captions": ["This is a dog.", "This is a dog."], "question": "Q?"},
     r"ep: caption 'This is a dog.' names 'dog' but its image is labelled 'cat'"),
    ({"captions": ["This is a cat.", "This is a dog!"], "question": "Q?"}, r"ep: captions end differently"),
])
def test_a_malformed_episode_is_one_line_naming_it(change, message):
  obj = {**GOOD, **{k: v for k, v in change.items() if v is not None}}
  for k, v in change.items():
    if v is None:
      del obj[k]
  with pytest.raises(SpaeInputError, match=message) as e:
    Episode.from_json(obj, "ep")
  assert "\n" not in str(e.value)
