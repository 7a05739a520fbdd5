"""The paper's layouts, declared as data on :class:`fairbench.results.table_layout.TableLayout`:

``groups``      tables 2-4: accuracy per group, Max/Min, Overall, DoB; per training task and evaluated dataset
``methods``     table 5: what each method needs, accuracy per race (``--by``), Overall, DoB, Max/Min
``attributes``  tables 6-7: per seed the mean over target attributes, then mean and interval over seeds
``min-group``   table 8: minimum group accuracy per target attribute (rows) and method (columns)

Their column titles where the paper's differ from a metric's own ("Overall") are the metric specs'.
"""

from __future__ import annotations

from typing import Any

from fairbench.registry import register_layout
from fairbench.results.attribute_table import metric_by_attribute_table
from fairbench.results.grouping import Context, Setting, attribute_means, seed_reports
from fairbench.results.table_layout import TableLayout
from fairbench.results.notes import undefined_attribute_notes
from fairbench.results.table import Column, Table


def _accuracy_notes(reports: list[dict[str, Any]]) -> list[str]:
    ddofs = sorted({r.get("ddof", 0) for r in reports if "ddof" in r}) or [0]
    return [f"accuracies in %; DoB in pp (std of the group accuracies, ddof {', '.join(map(str, ddofs))}); "
            "Max/Min = max / min group accuracy (ratio)"]


@register_layout("groups")
class Groups(TableLayout):
    summary = "the paper's tables 2-4: accuracy per group, Max/Min, Overall, DoB"
    metrics = ("max_min_ratio", "accuracy", "dob")
    group_columns = True
    heading = "Accuracy (%) per group"

    def notes(self, reports: list[dict[str, Any]]) -> list[str]:
        return _accuracy_notes(reports)


@register_layout("methods")
class Methods(TableLayout):
    summary = "the paper's table 5: what each method needs, accuracy per race (--by), Overall, DoB, Max/Min"
    metrics = ("accuracy", "dob", "max_min_ratio")
    group_columns = True
    shows_needs = True

    def title(self, ctx: Context, by: str | None) -> str:
        return f"Method comparison, accuracy (%) per {by or 'group'}"

    def default_by(self, ctx: Context) -> str | None:
        """Per race when the evaluated data's groups are race x something; else its groups."""
        protected = next(iter(ctx.settings[0].seeds.values()))[0].protected
        return "race" if "race" in protected and len(protected) > 1 else None

    def reports(self, setting: Setting, by: str | None) -> tuple[dict[int, dict[str, Any]], list[str]]:
        return seed_reports(setting, by), []  # groups recomputed from the predictions, never averaged

    def notes(self, reports: list[dict[str, Any]]) -> list[str]:
        return _accuracy_notes(reports)


@register_layout("attributes")
class Attributes(TableLayout):
    summary = "the paper's tables 6-7: means over target attributes (accuracy, TPR, DEO, DEOdds)"
    metrics = ("accuracy", "max_group_accuracy", "min_group_accuracy", "tpr", "max_group_tpr", "min_group_tpr",
               "deo", "deodds")
    per_target = False

    def title(self, ctx: Context, by: str | None) -> str:
        return f"Mean over {len({t for s in ctx.settings for t in s.targets})} target attributes"

    def reports(self, setting: Setting, by: str | None) -> tuple[dict[int, dict[str, Any]], list[str]]:
        return attribute_means(setting)

    def source(self, setting: Setting) -> str:
        return f", {len(setting.targets)} attribute{'s' if len(setting.targets) != 1 else ''}"

    def notes(self, reports: list[dict[str, Any]]) -> list[str]:
        return ["per seed, each metric is the mean over the target attributes of its per-attribute value "
                "(DEO and DEOdds are never recomputed from averaged rates); accuracies and TPRs in %, DEO / DEOdds in pp"]

    def row_notes(self, setting: Setting, reports: dict[int, dict[str, Any]], columns: list[Column]) -> list[str]:
        return undefined_attribute_notes(setting, reports, columns)

    def diff_block(self, setting: Setting, paper_targets: set[str]) -> str | None:
        if set(setting.targets) == paper_targets:
            return None
        return f"n/a: ours has {len(set(setting.targets) & paper_targets)} of its {len(paper_targets)} attributes"


@register_layout("min-group")
class MinGroup(TableLayout):
    summary = "the paper's table 8: minimum group accuracy per target attribute and method"
    metrics = ("min_group_accuracy",)
    per_target = False
    heading = "Minimum group accuracy (%) per attribute"

    def notes(self, reports: list[dict[str, Any]]) -> list[str]:
        return ["minimum group accuracy in %"]

    def table(self, ctx: Context, paper: bool | None, show_needs: bool, by: str | None) -> Table:
        return metric_by_attribute_table(self, ctx, paper, show_needs)
