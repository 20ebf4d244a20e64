"""The course's recipes, built on the engine and the world: profiles, pre-training the base model,
the SFT recipe, cached artefacts, the real chat model's lessons (scale, a new skill, its own replies as
data), the guard, notebook 01's Q&A-pages ablation, notebook 04's safety stages and notebook 05's rounds."""
