"""The world zoo's training recipes: what trained the weights shipped in ``tailor/world/zoo/weights/`` (base model,
world CLIP, oracles, face models, adapters). They live in the source checkout, beside the package, and are not
installed with it (like torchtune's ``recipes/`` or diffusers' ``examples/``); what runs at inference (weight paths,
oracle and CLIP model classes, scorers) stays in :mod:`tailor.world.zoo`.

    python -m zoo train --only unet-long --runs RUNS --steps 6000 --batch-size 16   # = tailor world train-zoo ...
    python -m zoo faces --out RUNS                                                   # the world face models
    zoo/gpu.sh [STAGE] [MINUTES] [RUNS]                                              # one command on a GPU machine

Stages, in order: :mod:`zoo.recipe`; the adapters: :mod:`zoo.adapters`; the face models: :mod:`zoo.faces`.
"""
