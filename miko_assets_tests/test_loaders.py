"""Dataset loaders against the real files in ../shared/data, the generic formats, and the sample.

Expected counts and fields were computed separately from the raw files (ast / json / csv).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from miko_assets.datasets.common import infer_split
from miko_assets.datasets.isarcasm import SUBTYPE_COLUMNS, load_isarcasmeval
from miko_assets.datasets.miko_release import load_miko_release
from miko_assets.datasets.mmsd import KeywordFilterStats, load_mmsd
from miko_assets.datasets.mmsd2 import load_mmsd2
from miko_assets.datasets.registry import LOADERS, load_posts
from miko_assets.datasets.twitter import load_twitter
from miko_assets_tests.paths import REPO_ROOT, SHARED_DATA

MMSD = SHARED_DATA / "mmsd"
SAMPLE = REPO_ROOT / "miko_assets" / "sample_data"


# --- MMSD ---------------------------------------------------------------------------------


def test_mmsd_train_with_attributes(tmp_path: Path) -> None:
    posts = list(load_mmsd(MMSD / "train_sample.txt", images_dir=tmp_path, attributes_path=MMSD / "extract_sample"))
    assert len(posts) == 400
    assert {(p.dataset, p.split) for p in posts} == {("mmsd", "train")}
    assert sum(p.label for p in posts) == 400  # the first 400 train lines are all sarcastic
    assert all(p.labels == {} and len(p.metadata["image_attributes"]) == 5 for p in posts)
    third = posts[2]
    assert third.post_id == "mmsd:840006160660983809"
    assert third.text == "<user> thanks for showing up for our appointment today . "
    assert third.image_path == str(tmp_path / "840006160660983809.jpg")
    assert third.metadata["image_attributes"] == ["water", "waters", "dark", "large", "background"]


def test_mmsd_valid_has_hashtag_label_and_no_attributes_without_extract_all() -> None:
    posts = list(load_posts("mmsd", MMSD / "valid2_sample.txt"))
    assert len(posts) == 100
    assert {p.split for p in posts} == {"valid"}
    assert sum(p.labels["hashtag_label"] for p in posts) == 100
    assert sum(p.label for p in posts) == 100
    assert posts[1].source_id == "854678856724340736"
    assert posts[1].text.startswith('" oh , good . now no one will know we \'re here . "')
    assert posts[1].image_path is None
    assert all(p.metadata == {} for p in posts)


def test_mmsd_finds_extract_all_beside_the_data_file(tmp_path: Path) -> None:
    (tmp_path / "train.txt").symlink_to(MMSD / "train_sample.txt")
    (tmp_path / "extract_all").symlink_to(MMSD / "extract_sample")
    posts = list(load_mmsd(tmp_path / "train.txt"))
    assert sum("image_attributes" in p.metadata for p in posts) == 400
    assert posts[0].metadata["image_attributes"] == ["eyes", "flock", "black", "flight", "snowboarding"]


def test_mmsd_keyword_filter_matches_upstream_and_counts_drops() -> None:
    stats = KeywordFilterStats()
    kept = list(load_mmsd(MMSD / "train_sample.txt", keyword_filter=True, filter_stats=stats))
    assert len(kept) == 229
    assert (stats.seen, stats.dropped, len(stats.dropped_ids)) == (400, 171, 171)
    assert stats.by_keyword == {
        "<url>": 117, "sarcasm": 14, "humour": 11, "reposting": 7, "joke": 5,
        "sarcastic": 5, "humor": 5, "jokes": 5, "irony": 1, "exgag": 1,
    }
    assert "910308516510011393" in stats.dropped_ids
    assert not any("<url>" in p.text.split() for p in kept)
    assert len(list(load_mmsd(MMSD / "train_sample.txt"))) == 400  # off by default


# --- MMSD2.0 ------------------------------------------------------------------------------


def test_mmsd2_train_and_valid(tmp_path: Path) -> None:
    train = list(load_mmsd2(SHARED_DATA / "mmsd2" / "train_sample.json", images_dir=tmp_path))
    valid = list(load_posts("mmsd2", SHARED_DATA / "mmsd2" / "valid_sample.json"))
    assert (len(train), len(valid)) == (300, 100)
    assert (sum(p.label for p in train), sum(p.label for p in valid)) == (300, 100)
    assert {p.split for p in train} == {"train"} and {p.split for p in valid} == {"valid"}
    assert train[1].post_id == "mmsd2:908913372199915520"
    assert train[1].text == "haha ."
    assert train[1].image_path == str(tmp_path / "908913372199915520.jpg")
    assert valid[3].text == "<user> finally found proof that the earth is flat"
    assert len({p.post_id for p in train}) == 300


# --- Twitter-2015 / 2017 --------------------------------------------------------------------


def test_twitter2015_conll() -> None:
    posts = list(load_twitter(SHARED_DATA / "twitter2015" / "train_sample.txt", dataset="twitter2015"))
    assert len(posts) == 108
    assert len({p.post_id for p in posts}) == 108
    assert all(p.label is None for p in posts)
    first = posts[0]
    assert first.post_id == "twitter2015:1015799"
    assert first.text == (
        "RT @JayKenMinaj _ : Me outside of where George Zimmerman got shot at . "
        "You know God is so good . http://t.co/Z3neVBQ7vF"
    )
    assert first.metadata["ner_tags"][8:10] == ["B-PER", "I-PER"]
    assert posts[-1].source_id == "91551"
    assert sum(len(p.metadata["tokens"]) for p in posts) == 1781
    assert sum(tag.startswith("B-") for p in posts for tag in p.metadata["ner_tags"]) == 164


def test_twitter2017_is_the_same_format_under_its_own_name(tmp_path: Path) -> None:
    posts = list(load_posts("twitter2017", SHARED_DATA / "twitter2015" / "train_sample.txt", images_dir=tmp_path))
    assert posts[1].post_id == "twitter2017:1109405"
    assert posts[1].image_path == str(tmp_path / "1109405.jpg")


# --- iSarcasmEval ---------------------------------------------------------------------------


def test_isarcasmeval_train() -> None:
    posts = list(load_isarcasmeval(SHARED_DATA / "isarcasmeval" / "train.En.csv"))
    assert len(posts) == 3468
    assert sum(p.label for p in posts) == 867
    assert {p.split for p in posts} == {"train"}
    sums = {name: sum(p.labels[name] or 0 for p in posts) for name in SUBTYPE_COLUMNS}
    assert sums == {
        "sarcasm": 713, "irony": 155, "satire": 25,
        "understatement": 10, "overstatement": 40, "rhetorical_question": 101,
    }
    assert sum(p.metadata["rephrase"] is not None for p in posts) == 867
    assert sum("\n" in p.text for p in posts) == 232  # quoted multi-line tweets stay whole
    second = posts[1]
    assert second.post_id == "isarcasmeval:1"
    assert second.text.endswith("yeah I don’t either ¯\\_(ツ)_/¯")
    assert second.metadata["rephrase"].startswith("I do not like when professors")
    assert second.labels["sarcasm"] == 1 and second.labels["irony"] == 0
    empty = posts[1062]
    assert (empty.source_id, empty.text, empty.label) == ("1062", "", 0)
    assert set(empty.labels.values()) == {None} and empty.metadata["rephrase"] is None


def test_isarcasmeval_task_a_test_format(tmp_path: Path) -> None:
    path = tmp_path / "task_A_En_test.csv"
    path.write_text('text,sarcastic\n"Oh joy, Monday",1\nLovely sunny day,0\n', encoding="utf-8")
    posts = list(load_posts("isarcasmeval", path))
    assert [(p.post_id, p.split, p.label, p.labels) for p in posts] == [
        ("isarcasmeval:test-0", "test", 1, {}),
        ("isarcasmeval:test-1", "test", 0, {}),
    ]
    assert posts[0].text == "Oh joy, Monday"


# --- MIKO release ---------------------------------------------------------------------------


def test_miko_release(tmp_path: Path) -> None:
    posts = list(load_miko_release(SHARED_DATA / "miko_release" / "train.json", images_dir=tmp_path))
    # 700 records; 13 posts are listed twice (same image, text and intentions): one post each.
    assert len(posts) == 687
    assert len({p.post_id for p in posts}) == 687
    assert not any("#" in p.source_id for p in posts)
    assert sum(bool(p.metadata["judged_again_in"]) for p in posts) == 13
    post_198 = next(p for p in posts if p.source_id == "198")
    assert (post_198.metadata["record_index"], post_198.metadata["judged_again_in"]) == (38, [314])
    assert post_198.metadata["intention_labels"] == [1, 1, 1, 1, 1, 1, 1, 1, 0, 1]  # record 314 rejects all
    labels = [p.metadata["intention_labels"] for p in posts]
    assert sum(map(sum, labels)) == 5239
    assert (sum(row[0] for row in labels), sum(row[4] for row in labels)) == (565, 432)  # xWant, xReact
    assert all(len(p.metadata["intentions"]) == 10 and p.label is None for p in posts)
    assert sum(p.metadata["intentions"][9] is None for p in posts) == 13
    tenth = posts[10]
    assert tenth.metadata["intentions"][9] is None
    assert tenth.metadata["intentions"][8].startswith("Before posting this Tweet, the user needs to ensure")
    second = posts[1]
    assert second.post_id == "miko_release:132"
    assert second.metadata["image"] == "132.jpg"
    assert second.image_path == str(tmp_path / "132.jpg")
    assert second.metadata["intentions"][4] == (
        "After posting this Tweet, the user feels empowered and hopeful for change."
    )


# --- generic JSONL / CSV --------------------------------------------------------------------


def test_generic_jsonl_keeps_every_row_with_reasons(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "a1", "text": "hello #world", "image": "a1.jpg", "label": 1, "user": "bob"}).encode(),
        b'{"id": "a2", "text": "caf\xe9 au lait", "label": "0"}',  # latin-1 byte, not UTF-8
        json.dumps({"text": "no id here", "label": 2}).encode(),
        b"",
        b"this is not json",
        b"[1, 2]",
        json.dumps({"id": 7, "dataset": "Bad Name!", "text": None}).encode(),
        json.dumps({"id": "a8", "dataset": "other_set", "text": "named", "image": ""}).encode(),
    ]
    path = tmp_path / "My Posts-2024.jsonl"
    path.write_bytes(b"\r\n".join(lines) + b"\n")
    posts = list(load_posts("jsonl", path))
    assert [p.post_id for p in posts] == [
        "my_posts_2024:a1", "my_posts_2024:a2", "my_posts_2024:line-3", "my_posts_2024:line-5",
        "my_posts_2024:line-6", "my_posts_2024:7", "other_set:a8",
    ]
    assert {p.split for p in posts} == {"all"}
    ok, latin, no_id, not_json, not_object, bad_name, named = posts
    assert (ok.text, ok.label, ok.metadata, ok.text_error) == ("hello #world", 1, {"user": "bob"}, None)
    assert ok.image_path == str(tmp_path / "a1.jpg")  # relative to the data file's folder
    assert latin.text == "caf\ufffd au lait" and latin.label == 0
    assert latin.text_error == "not valid UTF-8: 1 undecodable byte(s) in line 2, replaced with U+FFFD"
    assert no_id.text_error is None and no_id.label is None
    assert no_id.metadata["load_warnings"] == [
        "no `id`: source id taken from its position (line-3)",
        "`label` 2 is not 0/1 and was dropped",
    ]
    assert not_json.text == "this is not json" and "line 5 is not valid JSON" in not_json.text_error
    assert not_object.text_error == "line 6 is not a JSON object"
    assert bad_name.text == "" and bad_name.text_error == "no `text` field"
    assert bad_name.metadata["load_warnings"] == [
        "`dataset` 'Bad Name!' is not a [a-z0-9_]+ name; using 'my_posts_2024'"
    ]
    assert named.image_path is None and named.dataset == "other_set"


def test_generic_csv_with_images_dir_bom_and_bad_bytes(tmp_path: Path) -> None:
    path = tmp_path / "tweets_test.csv"
    path.write_bytes(
        b"\xef\xbb\xbfid,text,image,label,source\n"
        b'c1,"two\nlines",c1.png,1,web\n'
        b"c2,na\xefve,,0,app\n"
        b",orphan,,,\n"
    )
    images = tmp_path / "pics"
    posts = list(load_posts("csv", path, images_dir=images))
    assert [(p.post_id, p.split, p.label) for p in posts] == [
        ("tweets_test:c1", "test", 1), ("tweets_test:c2", "test", 0), ("tweets_test:row-3", "test", None),
    ]
    first, second, third = posts
    assert first.text == "two\nlines" and first.image_path == str(images / "c1.png")
    assert first.metadata == {"source": "web"}
    assert second.text == "na\ufffdve" and second.image_path is None
    assert second.text_error == (
        "not valid UTF-8: 1 undecodable byte(s) in row 2, column(s) text, replaced with U+FFFD"
    )
    assert third.metadata["load_warnings"] == ["no `id`: source id taken from its position (row-3)"]


# --- registry -------------------------------------------------------------------------------


def test_registry_lists_formats_for_an_unknown_one() -> None:
    assert set(LOADERS) == {
        "mmsd", "mmsd2", "twitter2015", "twitter2017", "isarcasmeval", "miko_release", "jsonl", "csv"
    }
    with pytest.raises(ValueError) as error:
        load_posts("parquet", SHARED_DATA / "mmsd2" / "train_sample.json")
    message = str(error.value)
    assert "'parquet'" in message
    assert all(name in message for name in LOADERS)


@pytest.mark.parametrize(
    ("name", "split"),
    [
        ("valid2_sample.txt", "valid"),
        ("train.En.csv", "train"),
        ("task_A_En_test.csv", "test"),
        ("my-dev-set.jsonl", "dev"),
        ("val.json", "val"),
        ("latest_posts.jsonl", "all"),
    ],
)
def test_split_is_inferred_from_whole_words_of_the_file_name(name: str, split: str) -> None:
    assert infer_split(Path(name)) == split


# --- the bundled sample ---------------------------------------------------------------------


EMOJI = re.compile("[\u2600-\u27bf\U0001f000-\U0001faff]")


def test_bundled_sample_loads_with_its_fixtures() -> None:
    posts = list(load_posts("jsonl", SAMPLE / "posts.jsonl", split="sample", images_dir=SAMPLE / "images"))
    assert len(posts) == 24
    assert len({p.post_id for p in posts}) == 24
    assert {(p.dataset, p.split) for p in posts} == {("sample", "sample")}
    assert [p.label for p in posts].count(1) == 12 and [p.label for p in posts].count(0) == 12
    assert all(p.text_error is None and "load_warnings" not in p.metadata for p in posts)
    assert sum("#" in p.text for p in posts) == 9
    assert sum(bool(EMOJI.search(p.text)) for p in posts) == 18

    with_image = [p for p in posts if p.image_path]
    assert len(with_image) == 20
    assert all(Path(p.image_path).is_file() for p in with_image)
    undecodable, orientations = [], {}
    for post in with_image:
        with Image.open(post.image_path) as image:
            orientation = image.getexif().get(0x0112)
            if orientation:
                orientations[post.source_id] = orientation
            try:
                image.load()
            except OSError:
                undecodable.append(post.source_id)
    assert undecodable == ["s19"]
    assert orientations == {"s04": 8, "s05": 6}
    assert sum(f.stat().st_size for f in SAMPLE.rglob("*") if f.is_file()) < 1_500_000
