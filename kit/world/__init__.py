"""The course's own world: real countries and their facts, the pre-training corpus written from them,
the probes of what a model knows about them (cloze, strict and lenient QA, baselines), general knowledge
beyond them (the capability probe, everyday requests and text), the safety data of notebook 04 and its
bias probe."""
