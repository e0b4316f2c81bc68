"""Prompt files, rendering, stage configuration, code versions and request building."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from miko_assets.distill.caption import NO_CAPTION, build_caption_request
from miko_assets.distill.config import ImageSettings, StageConfig, code_version, stage_config
from miko_assets.distill.intentions import INTENTIONS_SCHEMA, build_intentions_request
from miko_assets.distill.key_info import KEY_INFO_SCHEMA, KeyInfo, build_key_info_request
from miko_assets.config_files import PACKAGED_PROMPTS_DIR, prices_path, prompts_dir
from miko_assets.distill.prompts import PromptError, all_prompts, load_prompt, render

LOCAL_MODEL = "SmolLM2-135M-Instruct.Q4_1"
from miko_assets.distill.relations import RELATIONS
from miko_assets.llm.batch import request_from_json
from miko_assets.llm.models import ImageInput, LLMRequest
from miko_assets.llm.openai_provider import chat_payload

REPO_PROMPTS = Path(__file__).resolve().parents[1] / "prompts"
# stage (named as its asset and table) -> the prompt it uses (named for what it asks)
STAGE_PROMPTS = {
    "captions": "caption", "key_info": "key_info", "intentions": "intentions",
    "judge_plausibility": "judge_plausibility", "judge_typicality": "judge_typicality",
}


@pytest.fixture
def prompts_copy(tmp_path: Path) -> Path:
    """A writable copy of the repository's prompts folder."""
    return Path(shutil.copytree(REPO_PROMPTS, tmp_path / "prompts"))


def _env(directory: Path, **overrides: str) -> dict[str, str]:
    return {"MIKO_PROMPTS_DIR": str(directory), **overrides}


def test_every_prompt_version_is_registered() -> None:
    registered = {(p.name, p.version) for p in all_prompts(REPO_PROMPTS)}
    assert registered == {
        ("caption", "v1"),
        ("key_info", "v1"),
        ("key_info", "v2"),
        ("key_info", "v3"),
        ("intentions", "v1"),
        ("intentions", "v2"),
        ("intentions", "v3"),
        ("intentions", "v4"),
        ("judge_plausibility", "v1"),
        ("judge_typicality", "v1"),
    }
    shas = [p.sha for p in all_prompts(REPO_PROMPTS)]
    assert len(set(shas)) == len(shas) and all(len(s) == 64 for s in shas)


def test_packaged_prompts_are_the_repository_folder() -> None:
    # The package's copy is a link to the top-level folder people edit, not a second copy.
    assert PACKAGED_PROMPTS_DIR.resolve() == REPO_PROMPTS.resolve()
    assert {p.relative_to(PACKAGED_PROMPTS_DIR) for p in PACKAGED_PROMPTS_DIR.rglob("*.yaml")} == {
        p.relative_to(REPO_PROMPTS) for p in REPO_PROMPTS.rglob("*.yaml")
    }


def test_prompts_come_from_the_environment_then_the_project_folder_then_the_package(
    prompts_copy: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prompts_dir({}, cwd=empty) == PACKAGED_PROMPTS_DIR
    assert prices_path({}, cwd=empty) == PACKAGED_PROMPTS_DIR / "prices.yaml"
    # `prompts_copy` is `tmp_path/prompts`: a project folder's own prompts (it has a stages.yaml).
    assert prompts_dir({}, cwd=tmp_path) == prompts_copy
    assert prices_path({}, cwd=tmp_path) == prompts_copy / "prices.yaml"
    (prompts_copy / "prices.yaml").unlink()
    assert prices_path({}, cwd=tmp_path) == PACKAGED_PROMPTS_DIR / "prices.yaml"
    elsewhere = tmp_path / "elsewhere"
    assert prompts_dir({"MIKO_PROMPTS_DIR": str(elsewhere)}, cwd=tmp_path) == elsewhere
    assert prices_path({"MIKO_PRICES_PATH": "p.yaml"}, cwd=tmp_path) == Path("p.yaml")
    # A folder named prompts without a stages.yaml is not taken for miko's.
    (prompts_copy / "stages.yaml").unlink()
    assert prompts_dir({}, cwd=tmp_path) == PACKAGED_PROMPTS_DIR


def test_paper_prompts_are_version_1() -> None:
    caption = load_prompt("caption", "v1", REPO_PROMPTS)
    (_, user) = render(caption, text="good morning")
    assert user.content == (
        'Based on the following text "good morning", please describe the current image in detail.'
    )
    key_info = load_prompt("key_info", "v1", REPO_PROMPTS).user
    for field in ("Concept:", "Action:", "Object:", "Emotion:", "Keywords:"):
        assert field in key_info
    intentions = load_prompt("intentions", "v1", REPO_PROMPTS)
    assert intentions.output == "text"
    for relation in RELATIONS:
        assert f"Intention{relation.number}: {relation.prefix} ..." in intentions.user
    assert "human-centric" in intentions.user
    assert "think about the concepts, actions, object, emotions, and keywords" in (
        intentions.user.replace("\n", " ").lower()
    )


def test_intention_prompts_name_every_prefix_and_put_the_post_last() -> None:
    for prompt in all_prompts(REPO_PROMPTS):
        if prompt.per_prefix:  # one call per prefix: the prefix itself comes last
            assert prompt.user.rstrip().endswith("${prefix} ..."), (prompt.name, prompt.version)
        elif prompt.name == "intentions":
            for relation in RELATIONS:
                assert relation.prefix in prompt.user, (prompt.version, relation.name)
        if prompt.name != "caption":  # v1 caption is the paper's one sentence, verbatim
            fixed_part = prompt.user.split("${")[0]
            assert len(fixed_part) > len(prompt.user) / 2, (prompt.name, prompt.version)
            assert "$" not in prompt.system


def test_render_gives_system_then_user_and_names_missing_fields() -> None:
    prompt = load_prompt("intentions", "v1", REPO_PROMPTS)
    fields = {"text": "hi $5 {x}", "caption": "a cat", **KeyInfo(concept="c").prompt_fields()}
    system, user = render(prompt, **fields, unused="ignored")
    assert (system.role, user.role) == ("system", "user")
    assert user.content.endswith('Text: "hi $5 {x}"\nImage description: a cat\nConcept: c\n'
                                 "Action: none\nObject: none\nEmotion: none\nKeywords: none")
    with pytest.raises(PromptError, match="needs field.*caption, concept"):
        render(prompt, text="hi", action="a", object="o", emotion="e", keywords="k")


def test_sha_ignores_layout_but_follows_content(prompts_copy: Path) -> None:
    path = prompts_copy / "intentions" / "v1.yaml"
    original = load_prompt("intentions", "v1", prompts_copy)
    assert original == load_prompt("intentions", "v1", REPO_PROMPTS)

    data = yaml.safe_load(path.read_text())
    path.write_text("# a comment\n" + yaml.safe_dump(data, width=1000, sort_keys=True))
    assert load_prompt("intentions", "v1", prompts_copy).sha == original.sha

    data["user"] = data["user"].replace("human-centric", "human centred")
    path.write_text(yaml.safe_dump(data))
    edited = load_prompt("intentions", "v1", prompts_copy)
    assert edited.sha != original.sha
    assert edited.user != original.user


def test_malformed_or_absent_prompts_are_clear_errors(prompts_copy: Path) -> None:
    with pytest.raises(PromptError, match="no prompt file"):
        load_prompt("intentions", "v9", prompts_copy)
    with pytest.raises(PromptError, match="invalid prompt name"):
        load_prompt("../intentions", "v1", prompts_copy)

    path = prompts_copy / "key_info" / "v8.yaml"
    data = yaml.safe_load((prompts_copy / "key_info" / "v2.yaml").read_text())
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PromptError, match="must match its folder and file name"):
        load_prompt("key_info", "v8", prompts_copy)
    path.write_text(yaml.safe_dump({**data, "version": "v8", "user": "costs $ 5"}))
    with pytest.raises(PromptError, match="invalid placeholder"):
        load_prompt("key_info", "v8", prompts_copy)
    path.write_text(yaml.safe_dump({**data, "version": "v8", "temprature": 1}))
    with pytest.raises(PromptError, match="malformed"):
        load_prompt("key_info", "v8", prompts_copy)


def test_stage_config_defaults_use_the_embedded_model() -> None:
    for stage, prompt in STAGE_PROMPTS.items():
        config = stage_config(stage, {})
        assert (config.provider, config.model) == ("local", LOCAL_MODEL)
        assert config.prompt().name == config.prompt_name == prompt
    key_info = stage_config("key_info", {})
    intentions = stage_config("intentions", {})
    # Per-field and per-relation completion (v3): a short clause each, at temperature 0.3.
    assert (key_info.prompt_version, key_info.params.temperature, key_info.params.max_tokens) == ("v3", 0.3, 40)
    assert (intentions.prompt_version, intentions.params.temperature, intentions.params.max_tokens) == ("v3", 0.3, 64)
    assert key_info.prompt().per_prefix and intentions.prompt().per_prefix
    with pytest.raises(PromptError, match="unknown stage"):
        stage_config("sarcasm", {})


def test_no_default_prompt_mentions_sarcasm_and_v2_stays_the_sarcasm_aware_variant() -> None:
    for env in ({}, {"MIKO_CONFIG": "paper"}):
        for stage in STAGE_PROMPTS:
            prompt = stage_config(stage, env).prompt()
            text = f"{prompt.system} {prompt.user}".lower()
            assert "sarcas" not in text and "iron" not in text, (env, stage, prompt.version)
    for name in ("intentions", "key_info"):
        assert "sarcas" in load_prompt(name, "v2", REPO_PROMPTS).user.lower() + load_prompt(name, "v2", REPO_PROMPTS).system.lower()


def test_paper_configuration_reproduces_the_papers_prompts_and_parameters() -> None:
    env = {"MIKO_CONFIG": "paper"}
    key_info, intentions = stage_config("key_info", env), stage_config("intentions", env)
    for config in (key_info, intentions):
        assert (config.provider, config.model, config.prompt_version) == ("openai", "gpt-3.5-turbo", "v1")
    assert (key_info.params.temperature, key_info.params.max_tokens) == (0.5, 300)
    assert (intentions.params.temperature, intentions.params.max_tokens) == (0.7, 300)
    assert stage_config("intentions", {**env, "MIKO_INTENTIONS_MODEL": "gpt-4o-mini"}).model == "gpt-4o-mini"
    with pytest.raises(PromptError, match="MIKO_CONFIG='papr': no such configuration; known: paper"):
        stage_config("intentions", {"MIKO_CONFIG": "papr"})
    with pytest.raises(PromptError, match="no such configuration"):
        stage_config("intentions", {"MIKO_CONFIG": "../stages"})


def test_adding_optional_prompt_fields_kept_the_older_shas() -> None:
    # The shas of the prompts written before `prefixes` existed, as registered in warehouses.
    assert load_prompt("intentions", "v1", REPO_PROMPTS).sha == "3b4846b049a5c1a29a7f74a72a452b8d99727ed58ea1abdb920cde63a91edf3a"
    assert load_prompt("key_info", "v3", REPO_PROMPTS).prefixes["concept"] == "The main topic of this post is"


def test_environment_overrides_the_stage_config(prompts_copy: Path) -> None:
    env = _env(
        prompts_copy,
        MIKO_INTENTIONS_MODEL="gpt-4o-mini",
        MIKO_INTENTIONS_PROVIDER="openai",
        MIKO_INTENTIONS_PROMPT_VERSION="v2",
        MIKO_INTENTIONS_TEMPERATURE="0.2",
        MIKO_INTENTIONS_MAX_TOKENS="400",
        MIKO_INTENTIONS_SEED="7",
        MIKO_KEY_INFO_MODEL="",  # empty counts as unset
    )
    config = stage_config("intentions", env)
    assert (config.provider, config.model, config.prompt_version) == ("openai", "gpt-4o-mini", "v2")
    params = config.params
    assert (params.temperature, params.max_tokens, params.seed) == (0.2, 400, 7)
    assert config.prompts_dir == prompts_copy
    assert stage_config("key_info", env).model == LOCAL_MODEL
    assert stage_config("captions", env).model == LOCAL_MODEL

    with pytest.raises(PromptError, match="MIKO_INTENTIONS_MAX_TOKENS"):
        stage_config("intentions", _env(prompts_copy, MIKO_INTENTIONS_MAX_TOKENS="many"))
    with pytest.raises(PromptError, match="no prompt file"):
        stage_config("intentions", _env(prompts_copy, MIKO_INTENTIONS_PROMPT_VERSION="v9")).prompt()


def test_the_old_stage_name_is_refused_with_the_new_one(prompts_copy: Path) -> None:
    """The captions stage was configured as `caption`; its old settings must not be ignored silently."""
    with pytest.raises(PromptError, match="rename MIKO_CAPTION_MODEL to MIKO_CAPTIONS_MODEL"):
        stage_config("captions", _env(prompts_copy, MIKO_CAPTION_MODEL="gpt-4o-mini"))
    path = prompts_copy / "stages.yaml"
    path.write_text(path.read_text().replace("  captions:\n", "  caption:\n"))
    with pytest.raises(PromptError, match="'caption' is now named 'captions': rename it there"):
        stage_config("captions", _env(prompts_copy))


def test_stages_file_in_the_prompts_dir_is_used(prompts_copy: Path) -> None:
    path = prompts_copy / "stages.yaml"
    data = yaml.safe_load(path.read_text())
    data["stages"]["captions"]["model"] = "llava-1.5-7b"
    path.write_text(yaml.safe_dump(data))
    assert stage_config("captions", _env(prompts_copy)).model == "llava-1.5-7b"
    path.write_text("stages: [")
    with pytest.raises(PromptError, match="cannot read stage configuration"):
        stage_config("captions", _env(prompts_copy))


def test_code_version_changes_with_prompt_model_and_params(prompts_copy: Path) -> None:
    def version(**overrides: str) -> str:
        config = stage_config("intentions", _env(prompts_copy, **overrides))
        return code_version(config, config.prompt())

    base = version()
    assert base == version()  # deterministic
    assert base.startswith("intentions@v3:")
    changed = {
        version(MIKO_INTENTIONS_MODEL="qwen2.5-0.5b-instruct"),
        version(MIKO_INTENTIONS_PROVIDER="openai"),
        version(MIKO_INTENTIONS_TEMPERATURE="0.71"),
        version(MIKO_INTENTIONS_MAX_TOKENS="701"),
        version(MIKO_INTENTIONS_PROMPT_VERSION="v1"),
        version(MIKO_INTENTIONS_TOP_K="10"),
    }
    assert base not in changed and len(changed) == 6

    path = prompts_copy / "intentions" / "v3.yaml"
    path.write_text(path.read_text().replace("human-centric", "human centred"))
    assert version() != base

    config = stage_config("intentions", _env(prompts_copy))
    with pytest.raises(PromptError, match="uses prompt 'intentions'"):
        code_version(config, load_prompt("key_info", "v1", prompts_copy))


def test_requests_carry_config_images_and_schema_only_for_json_prompts(
    prompts_copy: Path,
) -> None:
    image = ImageInput(sha256="ab" * 32, data_b64="AAAA")
    caption = stage_config("captions", _env(prompts_copy))
    request = build_caption_request(caption, caption.prompt(), "good morning", image)
    assert request.messages[-1].images == (image,)
    assert all(not m.images for m in request.messages[:-1])
    assert (request.provider, request.model, request.params) == (
        "local", LOCAL_MODEL, caption.params
    )
    assert request.output_schema is None

    v1 = stage_config("key_info", _env(prompts_copy, MIKO_KEY_INFO_PROMPT_VERSION="v1"))
    request = build_key_info_request(v1, v1.prompt(), "good morning", None)
    assert request.output_schema is None
    assert request.messages[-1].content.endswith('Text: "good morning"')

    v2 = stage_config("key_info", _env(prompts_copy, MIKO_KEY_INFO_PROMPT_VERSION="v2"))
    request = build_key_info_request(v2, v2.prompt(), "good morning", None)
    assert (request.output_schema, request.schema_name) == (KEY_INFO_SCHEMA, "key_info")
    assert request.messages[-1].content.endswith(f"Image description: {NO_CAPTION}")

    intentions = stage_config(
        "intentions", _env(prompts_copy, MIKO_INTENTIONS_PROMPT_VERSION="v2")
    )
    request = build_intentions_request(intentions, intentions.prompt(), "hi", "a cat", None)
    assert request.output_schema == INTENTIONS_SCHEMA
    assert "Concept: none" in request.messages[-1].content
    again = build_intentions_request(intentions, intentions.prompt(), "hi", "a cat", KeyInfo())
    assert again.cache_key() == request.cache_key()
    other = build_intentions_request(intentions, intentions.prompt(), "hi", "a dog", None)
    assert other.cache_key() != request.cache_key()


def test_image_settings_are_stage_configuration_and_change_the_code_version(
    prompts_copy: Path,
) -> None:
    def config(**overrides: str) -> StageConfig:
        return stage_config("captions", _env(prompts_copy, **{"MIKO_CAPTIONS_PROVIDER": "openai", **overrides}))

    default = config()
    assert default.image == ImageSettings(max_side=1024, detail=None)
    base = code_version(default, default.prompt())
    # Default settings add nothing, so versions made before image settings existed still match.
    assert "|i" not in base
    low = config(MIKO_CAPTIONS_IMAGE_MAX_SIDE="512", MIKO_CAPTIONS_IMAGE_DETAIL="low")
    assert low.image == ImageSettings(max_side=512, detail="low")
    versions = {
        code_version(c, c.prompt())
        for c in (low, config(MIKO_CAPTIONS_IMAGE_MAX_SIDE="768"), config(MIKO_CAPTIONS_IMAGE_DETAIL="high"))
    }
    assert base not in versions and len(versions) == 3

    path = prompts_copy / "stages.yaml"
    data = yaml.safe_load(path.read_text())
    data["stages"]["captions"]["image"] = {"max_side": 512, "detail": "low"}
    path.write_text(yaml.safe_dump(data))
    assert code_version(config(), default.prompt()) == code_version(low, low.prompt())

    with pytest.raises(PromptError, match="MIKO_CAPTIONS_IMAGE_DETAIL"):
        config(MIKO_CAPTIONS_IMAGE_DETAIL="medium")
    with pytest.raises(PromptError, match="provider 'anthropic' has no detail setting"):
        config(MIKO_CAPTIONS_PROVIDER="anthropic")
    # The environment can clear the file's detail.
    assert config(MIKO_CAPTIONS_PROVIDER="anthropic", MIKO_CAPTIONS_IMAGE_DETAIL="none").image == ImageSettings(
        max_side=512
    )
    data["stages"]["captions"]["image"] = {"max_sde": 512}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PromptError, match="max_sde"):
        config()


def test_image_detail_travels_with_the_request_and_keys_it(prompts_copy: Path) -> None:
    image = ImageInput(sha256="ab" * 32, data_b64="AAAA", width=640, height=480)

    def caption_request(**overrides: str) -> LLMRequest:
        config = stage_config("captions", _env(prompts_copy, MIKO_CAPTIONS_PROVIDER="openai", **overrides))
        return build_caption_request(config, config.prompt(), "good morning", image)

    default, low = caption_request(), caption_request(MIKO_CAPTIONS_IMAGE_DETAIL="low")
    assert default.messages[-1].images == (image,)
    assert low.messages[-1].images[0].detail == "low"
    # An image without a detail is keyed by its sha alone, as before image settings existed.
    assert default.fingerprint()["messages"][-1]["images"] == [image.sha256]
    assert low.fingerprint()["messages"][-1]["images"] == [{"sha256": image.sha256, "detail": "low"}]
    assert low.cache_key() != default.cache_key()
    payload = chat_payload(low)
    assert payload["messages"][-1]["content"][1]["image_url"]["detail"] == "low"
    assert "detail" not in chat_payload(default)["messages"][-1]["content"][1]["image_url"]
    # A batch item's stored request comes back with its detail, so it keys the same.
    assert request_from_json(low.request_json()).cache_key() == low.cache_key()
    assert request_from_json(default.request_json()).cache_key() == default.cache_key()
