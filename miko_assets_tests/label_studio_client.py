"""Runs under Label Studio's own Python (its virtual environment, which has `label-studio-sdk`):
one annotation round trip through the SDK, as a team would make it.

Reads JSON on stdin: `base_url`, `token`, `title`, `config` (labelling config XML), `tasks` (miko's
exported tasks), `from_name`, `annotators` (emails) and `labels` (intention_id -> one label per
annotator); creates the project and the annotators, imports the tasks, submits each annotator's
choices, exports the project as JSON to `export_path`, and prints what it made as JSON.
"""

from __future__ import annotations

import json
import sys

from label_studio_sdk import LabelStudio


def main() -> None:
    order = json.load(sys.stdin)
    client = LabelStudio(base_url=order["base_url"], api_key=order["token"])
    project = client.projects.create(title=order["title"], label_config=order["config"])
    client.projects.import_tasks(id=project.id, request=order["tasks"])
    users = [
        client.users.create(username=email.split("@")[0], email=email, password="annotator-pass-1")
        for email in order["annotators"]
    ]
    annotated = 0
    for task in client.tasks.list(project=project.id):
        for user, label in zip(users, order["labels"][task.data["intention_id"]], strict=True):
            result = {"from_name": order["from_name"], "to_name": "intention", "type": "choices",
                      "value": {"choices": [label]}}
            client.annotations.create(id=task.id, result=[result], completed_by=user.id)
            annotated += 1
    exported = b"".join(client.projects.exports.download_sync(project.id, export_type="JSON"))
    with open(order["export_path"], "wb") as out:
        out.write(exported)
    json.dump({"project": project.id, "users": [u.id for u in users], "annotations": annotated}, sys.stdout)


if __name__ == "__main__":
    main()
