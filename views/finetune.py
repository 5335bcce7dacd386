"""Fine-tune: LoRA on a bundled model, on the CPU, with a live loss curve; then the base and the tuned
model side by side, and the tuned model in the catalogue for every other page.

The page is its list of sections (components/finetune.py); the training and the runs are in
playground.finetune, in a process of their own that outlives this page.
"""

from __future__ import annotations

from components import finetune as sections

sections.start()
sections.intro()
examples = sections.data()  # stops the page when an upload cannot be read
base, settings = sections.settings()
sections.launch(base, settings, examples)
run = sections.runs()
sections.before_after(run)
sections.catalogue(run)
sections.finish()
