"""The fuzzy matcher: blocking, comparison levels, EM and decisions, with no database."""

import dataclasses
import json
import random
from collections.abc import Mapping
from datetime import date

import numpy as np
import pytest

from identity.matching import (
    DEFAULT_SCHEMA,
    FIELDS,
    Decision,
    Field,
    Kind,
    Model,
    Rule,
    Schema,
    Source,
    Table,
    Thresholds,
    block,
    blocking_keys,
    candidate_links,
    candidate_pairs,
    decide,
    dedupe,
    default_model,
    estimate,
    explain,
    febrl_schema,
    record_from_traits,
    score,
    score_candidates,
)

Record = dict[str, str | None]

ADA: Record = {
    "given_name": "ada",
    "surname": "lovelace",
    "birth_date": "1815-12-10",
    "email": "ada@example.com",
    "phone": "+442079460000",
    "postcode": "W1J7NT",
    "street_number": "12",
    "street": "st james square",
    "city": "london",
}


def with_(record: Record, **changes: str | None) -> Record:
    return {**record, **changes}


def probability(record: Mapping[str, object], other: Mapping[str, object]) -> float:
    scores = score_candidates(record, [other], default_model())
    return float(scores.probability[0])


def people(count: int, duplicates: int, seed: int = 1) -> tuple[list[Record], set[tuple[int, int]]]:
    """Returns distinct people plus typo'd copies of some, and the true pairs."""
    rng = random.Random(seed)
    given = ["olivia", "amelia", "isla", "noah", "oliver", "arthur", "muhammad", "leo", "harry"]
    given += ["evelyn", "ivy", "freya", "florence", "theo", "george", "oscar", "archie", "alfie"]
    family = ["ashworth", "blackwood", "carrow", "dunmore", "elsworth", "fairley", "garside"]
    family += ["hawksley", "ibbotson", "jessop", "kilbride", "larkin", "mottram", "nuttall"]
    records: list[Record] = []
    for i in range(count):
        g, s = rng.choice(given), rng.choice(family)
        born = date.fromordinal(date(1950, 1, 1).toordinal() + rng.randrange(20_000))
        records.append(
            {
                "given_name": g,
                "surname": s,
                "birth_date": born.isoformat(),
                "email": f"{g}.{s}{i}@example.com",
                "phone": f"+4420794{i:05d}",
                "postcode": f"N{rng.randrange(40)}",
                "street_number": str(rng.randrange(1, 200)),
                "street": rng.choice(["high street", "mill lane", "church road", "park avenue"]),
                "city": "london",
            }
        )
    person = list(range(count))
    for _ in range(duplicates):
        i = rng.randrange(count)
        copy = dict(records[i])
        name = str(copy["surname"])
        at = rng.randrange(1, len(name) - 1)
        copy["surname"] = name[:at] + name[at + 1] + name[at] + name[at + 2 :]
        if rng.random() < 0.5:
            copy["phone"] = None
        person.append(i)
        records.append(copy)
    truth = {(i, j) for j in range(len(records)) for i in range(j) if person[i] == person[j]}
    return records, truth


def table_of(records: list[Record], schema: Schema = DEFAULT_SCHEMA) -> Table:
    return Table.from_records([f"p{i}" for i in range(len(records))], records, schema)


def test_a_typod_duplicate_scores_above_suggest() -> None:
    typo = with_(ADA, given_name="adda", surname="lovelcae", phone=None)
    assert probability(ADA, typo) >= Thresholds().suggest


def test_a_different_person_with_the_same_common_surname_does_not() -> None:
    neighbour = with_(
        ADA,
        given_name="charles",
        birth_date="1791-12-26",
        email="charles@example.com",
        phone="+442079461111",
        street_number="40",
    )
    assert probability(ADA, neighbour) < Thresholds().suggest


def test_a_nickname_counts_as_agreement() -> None:
    william = with_(ADA, given_name="william", birth_date=None, email=None, phone=None)
    nickname = score_candidates(william, [with_(william, given_name="bill")], default_model())
    stranger = score_candidates(william, [with_(william, given_name="oscar")], default_model())
    given = explain(nickname, 0)[0]
    assert (given.field, given.level) == ("given_name", "nickname")
    assert given.weight > 0
    assert nickname.probability[0] > stranger.probability[0]


def test_swapped_given_name_and_surname_are_caught_by_blocking() -> None:
    swapped = with_(ADA, given_name="lovelace", surname="ada", email=None, phone=None)
    others = [with_(ADA, given_name=f"x{i}", surname=f"y{i}") for i in range(3)]
    table = table_of([ADA, *others, swapped])
    assert [0, 4] in candidate_pairs(table).tolist()
    assert set(blocking_keys(ADA)) & set(blocking_keys(swapped))
    scores = score(table, None, np.array([[0, 4]]), default_model())
    assert explain(scores, 0)[0].level == "exact (given name and surname swapped)"
    assert scores.probability[0] >= Thresholds().suggest


def test_missing_fields_are_neutral() -> None:
    pair = score_candidates(ADA, [with_(ADA, birth_date=None)], default_model())
    field = explain(pair, 0)[FIELDS.index("birth_date")]
    assert (field.level, field.weight) == ("missing", 0.0)
    without = [with_(ADA, birth_date=None), with_(ADA, birth_date=None)]
    both = score_candidates(without[0], [without[1]], default_model())
    assert pair.match_weight[0] == pytest.approx(both.match_weight[0])


def test_auto_merge_needs_a_strong_identifier() -> None:
    copy = with_(ADA, surname="lovelance")
    anonymous = with_(ADA, email=None, phone=None)
    scores = score_candidates(ADA, [copy, with_(anonymous, surname="lovelance")], default_model())
    no_strong = score_candidates(
        anonymous, [with_(anonymous, surname="lovelance")], default_model()
    )
    assert scores.probability[0] >= Thresholds().auto_merge
    assert no_strong.probability[0] >= Thresholds().auto_merge
    assert decide(scores)[0] == Decision.MERGE
    assert decide(no_strong)[0] == Decision.SUGGEST


def test_oversized_blocks_are_capped() -> None:
    crowd, _ = people(30, duplicates=0)
    table = table_of([with_(r, birth_date="1970-01-01") for r in crowd])  # one block of 30
    by_birth_date = [r.prefix for r in DEFAULT_SCHEMA.rules].index("db")
    rules = len(DEFAULT_SCHEMA.rules)
    capped = block(table, max_block=10)
    assert (capped.blocks_skipped, capped.pairs_skipped) == (1, 30 * 29 // 2)
    assert not capped.membership(rules)[:, by_birth_date].any()
    uncapped = block(table, max_block=30)
    assert uncapped.membership(rules)[:, by_birth_date].sum() == 30 * 29 // 2


def test_em_falls_back_to_default_weights_on_degenerate_data() -> None:
    records, _ = people(10, duplicates=0)
    table = table_of(records)
    model = estimate(table, None, candidate_pairs(table))
    assert model.source is Source.DEFAULT
    assert model.note
    assert model.fields == default_model().fields


def test_em_learns_weights_that_find_the_duplicates() -> None:
    records, truth = people(400, duplicates=120)
    result = dedupe(table_of(records))
    found = {tuple(p) for p in result.pairs[result.scores.probability >= 0.9].tolist()}
    assert result.model.source is Source.EM
    assert len(found & truth) >= 0.95 * len(truth)
    assert len(found - truth) <= 0.05 * len(found)
    assert result.stats.records == 520


def test_model_round_trips_through_documents() -> None:
    records, _ = people(400, duplicates=120)
    table = table_of(records)
    model = estimate(table, None, candidate_pairs(table))
    doc = json.loads(json.dumps(model.to_document()))
    assert Model.from_document(doc) == model
    assert model.field("given_name").frequencies is not None


def test_explain_lists_every_field_with_its_level() -> None:
    scores = score_candidates(ADA, [with_(ADA, city=None, street_number="13")], default_model())
    evidence = explain(scores, 0)
    assert [e.field for e in evidence] == list(FIELDS)
    by_field = {e.field: e for e in evidence}
    assert by_field["email"].level.startswith("exact")
    assert by_field["city"].level == "missing"
    assert by_field["street_number"].level.startswith("one character slip")
    assert sum(e.weight for e in evidence) + scores.prior_weight == pytest.approx(
        scores.match_weight[0]
    )
    assert json.dumps([e.to_document() for e in evidence])


def test_linking_two_tables_pairs_left_rows_with_right_rows() -> None:
    mary: Record = {"given_name": "mary", "surname": "shelley", "birth_date": "1797-08-30"}
    left = table_of([mary, ADA])
    right = table_of([with_(ADA, given_name="adah", phone=None)])
    assert candidate_links(left, right).tolist() == [[1, 0]]


def test_record_from_traits_reads_segment_traits() -> None:
    record = record_from_traits(
        {
            "firstName": "Ada",
            "lastName": "Lovelace",
            "email": " Ada@Example.com ",
            "phone": "(415) 555-2671",
            "birthday": "1815-12-10T00:00:00Z",
            "address": {"street": "12 St James Square", "city": "London", "postalCode": "w1j 7nt"},
        }
    )
    assert record == {
        "given_name": "ada",
        "surname": "lovelace",
        "birth_date": "1815-12-10",
        "email": "ada@example.com",
        "phone": "+14155552671",
        "postcode": "W1J7NT",
        "street_number": "12",
        "street": "st james square",
        "city": "london",
    }


def test_record_from_traits_splits_a_full_name_and_drops_invalid_identifiers() -> None:
    record = record_from_traits(
        {"name": "Dr Ada King Lovelace", "email": "not-an-email", "address": "12 Baker St"}
    )
    assert (record["given_name"], record["surname"]) == ("ada", "lovelace")
    assert record["email"] is None
    assert (record["street_number"], record["street"]) == ("12", "baker street")


def test_blocking_keys_are_prefixed_sorted_and_unique() -> None:
    keys = blocking_keys(with_(ADA, given_name="bill"))
    assert keys == sorted(set(keys))
    assert {key.partition(":")[0] for key in keys} == {r.prefix for r in DEFAULT_SCHEMA.rules}
    assert "db:18151210" in keys


def test_a_schema_for_other_columns_matches_them() -> None:
    febrl = febrl_schema()
    row = {"given_name": "mitchell", "surname": "green", "date_of_birth": "19560409"}
    row |= {"soc_sec_id": "1804974", "postcode": "2119", "address_1": "wallaby place"}
    table = table_of([row, {**row, "soc_sec_id": "1804947", "surname": "grene"}], febrl)
    scores = score(table, None, candidate_pairs(table), default_model(febrl))
    assert scores.probability[0] >= Thresholds().suggest
    assert explain(scores, 0)[-1].level == "one character slip"


def test_a_schema_refuses_rules_on_unknown_fields() -> None:
    with pytest.raises(ValueError, match="names a field"):
        Schema(fields=(Field("name", Kind.NAME),), rules=(Rule("x", (("nope", Rule.__name__),)),))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cycle"):
        Schema(
            fields=(Field("a", Kind.TEXT, under="b"), Field("b", Kind.TEXT, under="a")), rules=()
        )


def test_a_model_refuses_a_schema_that_compares_otherwise() -> None:
    other = dataclasses.replace(
        DEFAULT_SCHEMA,
        fields=tuple(dataclasses.replace(f, under=None) for f in DEFAULT_SCHEMA.fields),
    )
    table = table_of([ADA, ADA], other)
    with pytest.raises(ValueError, match="otherwise"):
        score(table, None, np.array([[0, 1]]), default_model())
