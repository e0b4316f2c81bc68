"""The generation stages' names, in a module light enough for `miko --help` to list them."""

# In pipeline order, each named as its asset, its table, its entry in prompts/stages.yaml and
# its MIKO_<STAGE>_* settings.
GENERATION_STAGES = ("captions", "key_info", "intentions")
# A stage renamed to its asset's name -> its old name. Settings under the old name are refused
# with the new one: ignoring them would silently run another model than the one asked for.
RENAMED_STAGES = {"captions": "caption"}
