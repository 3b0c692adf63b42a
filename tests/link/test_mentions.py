"""Real mention normalisation (issue 25 item 3): the mention-set readers, string and encoder scoring, the command,
stage 1's `eval.mention_sets`, and the mention-like views of `data.mention_rate`."""
import json
import zlib

import numpy as np
import pytest

from phenolip_jax.data import mention_views as mv
from phenolip_jax.data import term_batches as tb
from phenolip_jax.data import text_views as tv
from phenolip_jax.link import mentions
from phenolip_jax.ontology import load_ontology

# PubTator-style gold in GSC+'s layout, with Windows line ends: an id line, the text, then start/end/mention/id.
GOLD_TSV = ("1001\r\nA boy with seizures and hydrocephaly.\r\n11\t19\tseizures\tHP:0001250\r\n"
            "24\t36\thydrocephaly\tHP:0000238\r\n\r\n1002\r\nAutosomal dominant; no fits.\r\n"
            "0\t18\tAutosomal dominant\tHP:0000006\r\n23\t27\tfits\tHP:9999999\r\n")


@pytest.fixture(scope="module")
def hpo():
    onto = load_ontology()
    return onto, np.asarray(onto.subtree("HP:0000118"), np.int64)


def test_pubtator_gold_is_read_and_what_cannot_be_scored_is_counted(tmp_path, hpo):
    onto, pool = hpo
    path = tmp_path / "gold_dev.tsv"
    path.write_bytes((GOLD_TSV + "1002\tDisease\tMESH:D000\n").encode())  # a PubTator relation line: counted
    got = mentions.read_mentions(str(path), onto, pool)
    assert got.name == "gold_dev" and got.texts == ("seizures", "hydrocephaly")
    assert [onto.ids[t] for t in got.gold] == ["HP:0001250", "HP:0000238"]
    assert got.dropped == {"unknown_id": 1, "outside_root": 1, "empty": 0, "unparsed_lines": 1}  # HP:9999999; inheritance


def test_jsonl_mentions_resolve_alt_ids_and_bad_lines_are_named(tmp_path, hpo):
    onto, pool = hpo
    alt, term = next((a, t) for a, t in onto.aliases.items() if t in set(pool.tolist()))
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"mention": "old id", "hpo_id": alt}) + "\n\n" + json.dumps({"mention": "", "hpo_id": alt}))
    got = mentions.read_mentions(str(path), onto, pool)
    assert got.texts == ("old id",) and int(got.gold[0]) == term and got.dropped["empty"] == 1
    path.write_text('{"text": "no id"}\n')
    with pytest.raises(ValueError, match=r"m.jsonl:1: expected"):
        mentions.read_mentions(str(path), onto, pool)
    other = tmp_path / "notes.tsv"
    other.write_text("just some text\nwithout any gold lines\n")
    with pytest.raises(ValueError, match="no `start<TAB>end<TAB>mention<TAB>HP:id` lines"):
        mentions.read_mentions(str(other), onto, pool)
    with pytest.raises(ValueError, match="is not a file"):
        mentions.read_mentions(str(tmp_path / "missing.tsv"), onto, pool)
    nothing = tmp_path / "nothing.jsonl"
    nothing.write_text(json.dumps({"mention": "dominant", "hpo_id": "HP:0000006"}) + "\n")  # inheritance only
    with pytest.raises(ValueError, match=r"nothing.jsonl.*no mention left to score.*outside_root': 1"):
        mentions.read_mentions(str(nothing), onto, pool)
    (tmp_path / "b").mkdir()
    twin = tmp_path / "b" / "m.jsonl"
    twin.write_text(json.dumps({"mention": "old id", "hpo_id": alt}) + "\n")
    path.write_text(json.dumps({"mention": "old id", "hpo_id": alt}) + "\n")
    with pytest.raises(ValueError, match="two files have the same name"):
        mentions.read_mention_sets(f"{path},{twin}", onto, pool)


def test_string_scores_use_every_synonym(tmp_path, hpo):
    onto, pool = hpo
    path = tmp_path / "g.tsv"
    path.write_bytes(GOLD_TSV.encode())
    s = mentions.read_mentions(str(path), onto, pool)
    scores = mentions.string_scores(onto, pool, mentions.as_query_sets([s]))
    # "Seizures" is an exact synonym of Seizure, "Hydrocephaly" one of Hydrocephalus
    assert scores["exact"]["g"]["acc@1"] == 1.0 and scores["fuzzy"]["g"]["acc@1"] == 1.0


def test_command_scores_an_encoder_beside_string_matching(mini_obo, tiny_bert_dir, tmp_path, capsys):
    path = tmp_path / "real.jsonl"
    rows = [("enlarged hearts", "HP:0001640"), ("ASD", "HP:0001631"), ("collapsed lungs", "HP:0002107")]
    path.write_text("".join(json.dumps({"mention": m, "hpo_id": h}) + "\n" for m, h in rows))
    out = tmp_path / "scores.json"
    assert mentions.main([f"--mentions={path}", f"--encoders={tiny_bert_dir}", f"--obo_path={mini_obo}",
                          f"--output={out}", "--synonyms"]) == 0
    saved = json.loads(out.read_text())
    figures = saved["figures"]["real"]
    raw = f"raw {tiny_bert_dir.rstrip('/').split('/')[-1]}"
    assert set(figures) == {"exact", "fuzzy", raw, raw + " + synonyms"}
    assert figures["exact"]["acc@1"] == pytest.approx(1 / 3)  # only "ASD" is written as HPO writes it
    for method in figures.values():
        assert 0.0 <= method["acc@1"] <= method["acc@10"] <= 1.0 and method["num_queries"] == 3
    assert "| real | exact | 3 | 33.3 |" in capsys.readouterr().out


def test_inflection_reordering_and_dropping():
    rng = np.random.default_rng(0)
    assert [mv.pluralise(w) for w in ("Lipoma", "phalanx", "abscess", "artery", "lens")] == [
        "Lipomas", "phalanges", "abscesses", "arteries", "lenses"]
    assert [mv.singularise(w) for w in ("cysts", "arteries", "phalanges", "lens", "stenoses")] == [
        "cyst", "artery", "phalanx", "lens", "stenosis"]
    assert mv.inflect("Preauricular pit", rng) == "Preauricular pits"
    assert mv.inflect("Palmar pits", rng) == "Palmar pit"
    assert mv.inflect("Abnormal lens morphology", rng) is None and mv.inflect("Pes planus", rng) is None
    for condition in ("Hypotonia", "Obesity", "Hirsutism", "Insulin resistance", "Ambiguous genitalia, female",
                      "Aplasia of the 5th finger"):
        assert mv.inflect(condition, rng) is None, condition  # conditions, lists and numbered parts keep their number
    assert mv.inflect("Renal anomaly", rng) == "Renal anomalies"
    assert mv.reorder("Hypoplasia of the radius", rng) == "radius hypoplasia"
    assert mv.reorder("Abnormality of the kidney", rng) in {f"kidney {w}" for w in mv._ANOMALY}
    assert mv.reorder("Increased serum urate", rng) in {"high serum urate", "elevated serum urate", "raised serum urate"}
    assert mv.reorder("Scoliosis", rng) is None
    assert mv.drop_word("Cerebral cortical cysts", rng) == "Cerebral cysts"
    assert mv.drop_word("Multiple cafe-au-lait spots", rng) is None  # the hyphenated core stays
    assert mv.drop_word("Abnormality of the kidney", rng) is None
    assert mv.mention_like("Hepatomegaly", rng) is None  # nothing applies
    assert {mv.mention_like("Lipoma", rng) for _ in range(5)} == {"lipomas"}


def test_mention_rate_rewrites_views_after_the_name():
    views = {0: (("Abnormality of the kidney", "name"), ("Renal anomaly", "synonym"), ("kidney [SEP] part of", "relation_parent")),
             1: (("Hepatomegaly", "name"), ("Enlarged liver", "synonym"))}
    plain = tb.SampleTermViews(views, views_per_term=3)
    mention = tb.SampleTermViews(views, views_per_term=3, mention_rate=1.0)
    off = tb.SampleTermViews(views, views_per_term=3, mention_rate=0.0)
    a = plain.random_map(0, np.random.default_rng(1))
    assert off.random_map(0, np.random.default_rng(1))["texts"].tolist() == a["texts"].tolist()  # 0: unchanged
    for seed in range(5):
        texts = mention.random_map(0, np.random.default_rng(seed))["texts"].tolist()
        assert texts[0] == "Abnormality of the kidney"  # the name anchors the term
        assert all(t == t.lower() and "[SEP]" not in t for t in texts[1:])  # every later view a mention variant
        hep = mention.random_map(1, np.random.default_rng(seed))["texts"].tolist()
        assert hep[0] == "Hepatomegaly" and set(hep[1:]) <= {"enlarged livers", "Enlarged liver", "Hepatomegaly"}


def test_stage1_refuses_a_mention_rate_outside_0_1(tiny_bert_dir, tmp_path):
    """The stage-1 run with mention sets and mention views is tests/tasks/test_stages.py's teacher_dir."""
    from phenolip_jax.tasks import stage1
    from tests.tasks.test_stages import tiny_stage1

    cfg = tiny_stage1(tiny_bert_dir)
    cfg.data.mention_rate = 1.5
    with pytest.raises(ValueError, match="mention_rate=1.5 must be in"):
        stage1.run(cfg, str(tmp_path / "run"))


def _bag_of_words(texts):
    """A stub encoder: unit-norm sums of fixed random word vectors (equal word sets, equal embeddings)."""
    rows = []
    for text in texts:
        v = sum(np.random.default_rng(zlib.crc32(w.encode())).normal(size=32) for w in text.lower().split())
        rows.append(v / np.linalg.norm(v))
    return np.stack(rows)


def test_encoder_scores_against_names_or_names_and_synonyms(mini):
    onto = mini[0]
    pool = np.asarray(onto.subtree("HP:0000118"), np.int64)
    gold = np.array([onto.index("HP:0001640"), onto.index("HP:0002107")], np.int64)
    s = mentions.MentionSet("m", ("enlarged heart", "collapsed lung"), gold, {})  # layperson synonyms, verbatim
    names_only = mentions.encoder_scores(_bag_of_words, onto, pool, mentions.as_query_sets([s]))["m"]
    both = mentions.encoder_scores(_bag_of_words, onto, pool, mentions.as_query_sets([s]), synonyms=True)["m"]
    assert both["acc@1"] == 1.0 and names_only["acc@1"] < 1.0 and both["num_candidates"] == len(pool)


def test_mention_views_never_reproduce_a_held_out_query_or_another_terms_string():
    views = {0: (("Renal cyst", "name"),), 1: (("Renal corticomedullary cysts", "name"), ("Thin nail", "synonym"))}
    guard = mv.ViewGuard(views, ["Thin nails"], tv.normalise)
    assert not guard(1, "renal cysts")  # the other term's name, in the plural: a wrong label
    assert not guard(1, "thin nail") and not guard(0, "Thin-nails")  # a held-out query, in either number
    assert guard(0, "renal cysts") and guard(1, "renal corticomedullary cyst")
    # Through the sampler: term 1's name can only become 'renal corticomedullary cyst' (dropping 'corticomedullary'
    # would give its parent's name, and its synonym only forms of the held-out query), so nothing else appears.
    sampler = tb.SampleTermViews(views, views_per_term=2, mention_rate=1.0)
    sampler._guard = guard
    seen = {sampler.random_map(1, np.random.default_rng(s))["texts"].tolist()[1] for s in range(40)}
    assert seen <= {"renal corticomedullary cyst", "Thin nail", "Renal corticomedullary cysts"}
    assert "renal corticomedullary cyst" in seen
