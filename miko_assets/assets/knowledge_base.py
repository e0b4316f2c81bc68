"""The knowledge base asset (statistics over every partition of intentions) and the lineage job."""

import dagster as dg
from pydantic import Field

from miko_assets.assets.metadata import png_image, whole_table
from miko_assets.resources import WarehouseResource
from miko_assets.stages.knowledge_base import (
    intention_quality,
    overall_statistics,
    plot_statistics,
    relation_statistics,
)
from miko_assets.warehouse.lineage import UnknownIntention, card_markdown, intention_card


@dg.asset(
    deps=["intentions"],
    group_name="knowledge_base",
    kinds={"duckdb"},
    description=(
        "Statistics of the intention knowledge base like the paper's, with a plot, and its quality "
        "floor per relation (well-formed, empty or failed, distinct tails); `miko export` writes it out."
    ),
)
def knowledge_base(warehouse: WarehouseResource) -> dg.MaterializeResult:
    wh = warehouse.get()
    stats = relation_statistics(wh)
    overall = overall_statistics(wh)
    quality = intention_quality(wh)
    overall_quality = quality.iloc[-1] if not quality.empty else None
    return dg.MaterializeResult(
        metadata={
            **{k: v for k, v in overall.items() if not isinstance(v, list)},
            "models": ", ".join(overall["models"]),
            "prompt_versions": ", ".join(overall["prompt_versions"]),
            "per_relation": whole_table(stats),
            "well_formed_share": float(overall_quality["well_formed"]) if overall_quality is not None else 0.0,
            "quality_floor": whole_table(quality),
            "plot": png_image(plot_statistics(stats), "per-relation statistics"),
        }
    )


class LineageConfig(dg.Config):
    intention_id: str = Field(description="an intention id (its newest version) or a version id (`<intention id>.<hash>`)")


@dg.op(description="Report how one intention (or one version of it) was produced, as the run's output metadata.")
def intention_lineage(context: dg.OpExecutionContext, config: LineageConfig, warehouse: WarehouseResource) -> dg.Output[None]:
    try:
        card = intention_card(warehouse.get(), config.intention_id.strip())
    except UnknownIntention as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    markdown = card_markdown(card)
    context.log.info(markdown)
    return dg.Output(None, metadata={
        "intention": card["intention"]["full_text"] or "(no intention)",
        "version_id": card["version_id"],
        "lineage": dg.MetadataValue.md(markdown),
    })


@dg.job(description="Show the lineage card of one intention (set its id in the launchpad).")
def lineage_job() -> None:
    intention_lineage()
