"""Every seed document ingests into the graph it describes, asserted node by node and edge by edge."""
from __future__ import annotations

import shutil

import pytest

from claimgraph.graph import InvalidDocument
from claimgraph.graph.ids import make_id, normalize_title, paper_id
from claimgraph.ingest import ingest_paths


def edges_of(store) -> dict[tuple[str, str, str], dict]:
    return {(e.src, e.type.value, e.dst): e.attrs for e in store.edges()}


def pid(title: str) -> str:
    return paper_id(title=title)


def cid(title: str) -> str:
    return make_id("claim", title)


# -- novelty report 000 ---------------------------------------------------------------------------------
USELESS = "Understanding the Emergence of Seemingly Useless Features in Next-Token Predictors"
USELESS_CLAIMS = [
    ("Decomposition of gradient signal into direct learning, pre-caching, and circuit sharing",
     "The authors provide a theoretically grounded decomposition of the next-token prediction gradient into three "
     "components that explain how Transformers learn features beyond immediate next-token prediction. This framework "
     "identifies which gradient paths contribute to feature emergence during training.", 10, 1),
    ("Method to estimate influence of gradient components on feature development",
     "The authors introduce an experimental approach to quantify how much each gradient component (direct, pre-cached, "
     "shared) contributes to the development of specific features during training. This enables attribution of learned "
     "features to their underlying gradient sources.", 10, 1),
    ("Framework connecting interventions to gradient influence ratios",
     "The authors establish a connection between causal interventions on trained models and the ratio of gradient "
     "components, enabling analysis of feature emergence in large language models without requiring full retraining "
     "or access to training trajectories.", 1, 0),
]
ON_EMERGENCE = 'On the Emergence of "Useless" Features in Next Token Predictors'  # seed: `of" Useless"` ... `PDF`
USELESS_CANDIDATES = [
    [(9, ON_EMERGENCE), (6, "Mechanics of Next Token Prediction with Self-Attention"),
     (30, "The implicit geometry of language : structure, semantics, and dynamics in next-token prediction"),
     (50, "Contextual gradient recomposition for sequential coherence preservation in large language model token generation"),
     (51, "A Close Look at Decomposition-based XAI-Methods for Transformer Language Models"),
     (52, "DecompX: Explaining Transformers Decisions by Propagating Token Decomposition"),
     (53, "Faster Language Models with Better Multi-Token Prediction Using Tensor Decomposition"),
     (54, "Transformer Is Inherently a Causal Learner"),
     (55, "Adjusting the Output of Decision Transformer with Action Gradient"),
     (56, "Resolving Token-Space Gradient Conflicts: Token Space Manipulation for Transformer-Based Multi-Task Learning")],
    [(9, ON_EMERGENCE), (58, "Full-gradient representation for neural network visualization"),
     (59, "Gradient Starvation: A Learning Proclivity in Neural Networks"),
     (60, "Layerwise optimization by gradient decomposition for continual learning"),
     (61, "Formation of representations in neural networks"),
     (62, "A new mechanism for eliminating implicit conflict in graph contrastive learning"),
     (63, "Gradients as Features for Deep Representation Learning"),
     (64, "Gradient based feature attribution in explainable ai: A technical review"),
     (65, "Contrastive Alignment with Semantic Gap-Aware Corrections in Text-Video Retrieval"),
     (66, "Meta-Learning and Universality: Deep Representations and Gradient Descent can Approximate any Learning Algorithm")],
    [],
]
USELESS_SAME_CATEGORY = [(9, ON_EMERGENCE), (21, "Understanding and minimising outlier features in transformer training"),
                         (49, "Stagewise Development in Transformers and the Geometry of the Loss Landscape")]

# -- novelty report 001 ---------------------------------------------------------------------------------
ASSOC = "How Do Transformers Learn to Associate Tokens: Gradient Leading Terms Bring Mechanistic Interpretability"
ASSOC_CLAIMS = [
    ("Closed-form weight characterizations via gradient leading terms",
     "The authors develop closed-form expressions for transformer weights at early training stages", 8, 0),
    ("Three basis functions for semantic associations",
     "The authors identify three interpretable basis functions\u2014bigram mapping, token-interchangeability mapping, "
     "and context mapping\u2014that compose", 5, 0),
    ("Empirical validation on self-attention models and practical LLMs",
     "The authors empirically verify that their theoretical weight characterizations closely match", 10, 0),
]
ASSOC_CANDIDATES = [
    [(51, "Transformers learn in-context by gradient descent"),
     (52, "Attention is not only a weight: Analyzing transformers with vector norms"),
     (53, "Linear transformers are secretly fast weight programmers"),
     (54, "Channel-attention-based TCN-Transformer for recognition of rough handling in parcels"),
     (55, "One-layer transformer provably learns one-nearest neighbor in context"),
     (56, "GMAR: Gradient-Driven Multi-Head Attention Rollout for Vision Transformer Interpretability"),
     (57, "Hard-Attention Gates with Gradient Routing for Endoscopic Image Computing"),
     (58, "GETAM: Gradient-weighted Element-wise Transformer Attention Map for Weakly-supervised Semantic segmentation")],
    [(59, "Understanding transformers via n-gram statistics"),
     (60, "Substitution-based semantic change detection using contextual embeddings"),
     (61, "N-Gram Learning and Pretraining Dynamics in Transformer Language Models"),
     (62, "Learning and Transferring Sparse Contextual Bigrams with Linear Transformers"),
     (63, "Predicting the Semantic Changes in Words across Corpora by Context Swapping")],  # seed: "[63] -- Predicting"
    [],
]


@pytest.mark.parametrize("prefix, title, claims, candidates, same_category, leaf, parent, leaf_count, total", [
    ("000", USELESS, USELESS_CLAIMS, USELESS_CANDIDATES, USELESS_SAME_CATEGORY,
     "Feature Emergence and Development Dynamics", "Mechanistic Interpretability", 4, 21),
    ("001", ASSOC, ASSOC_CLAIMS, ASSOC_CANDIDATES, [(1, "Linearity of relation decoding in transformer language models")],
     "Weight and Gradient Analysis", "Mechanistic Interpretability of Semantic Representations", 2, 23),
])
def test_novelty_seed(store, seed, prefix, title, claims, candidates, same_category, leaf, parent, leaf_count, total):
    [report] = ingest_paths(store, [seed(prefix)], embed=False)
    assert report.format == "novelty" and not report.unchanged
    paper = store.get_node(pid(title))
    assert (paper.type.value, paper.title, paper.text) == ("paper", title, "")
    assert paper.attrs["title_norm"] == normalize_title(title) and paper.attrs["title_known"] is True
    assert paper.attrs["candidates_examined"] == total
    assert "novelty_overview" in paper.attrs and "Overall" not in paper.attrs["novelty_overview"][:10]
    edges = edges_of(store)
    expected_edges: dict[tuple[str, str, str], dict] = {}

    leaf_id, parent_id = make_id("topic", leaf), make_id("topic", parent)
    assert store.get_node(leaf_id).title == leaf and store.get_node(leaf_id).attrs["paper_count"] == leaf_count
    assert store.get_node(parent_id).title == parent
    expected_edges[(leaf_id, "in_topic", parent_id)] = {}
    expected_edges[(paper.id, "in_topic", leaf_id)] = {}
    for n, ctitle in same_category:
        expected_edges[(paper.id, "compared_with", pid(ctitle))] = {"candidate": n, "same_category": True}
        expected_edges[(pid(ctitle), "in_topic", leaf_id)] = {}

    for k, ((ctitle, text, examined, refutable), cands) in enumerate(zip(claims, candidates)):
        claim = store.get_node(cid(ctitle))
        assert claim.title == ctitle and claim.text.startswith(text), claim.text
        assert claim.attrs["candidates_examined"] == examined, ctitle
        assert claim.attrs["refutable_candidates"] == refutable, ctitle
        assert claim.attrs["contribution"] == "ABC"[k] and claim.attrs["candidates_listed"] == len(cands)
        expected_edges[(claim.id, "extracted_from", paper.id)] = {}
        for n, cand in cands:
            node = store.get_node(pid(cand))
            assert (node.title, node.attrs["title_known"]) == (cand, True)
            expected_edges[(claim.id, "compared_with", node.id)] = {"candidate": n}
    assert edges == expected_edges
    papers = {pid(t) for cands in candidates for _, t in cands} | {pid(t) for _, t in same_category} | {paper.id}
    assert {n.id for n in store.list_nodes("paper")} == papers
    assert store.count_nodes() == {"claim": 3, "paper": len(papers), "topic": 2}
    assert store.stated_similar(cid(claims[0][0])) == []


# -- claim page 003 ---------------------------------------------------------------------------------------
CLAIM = ("Learned features reflect the functionality of the model and not just the data distribution, as evidenced by "
         "interpretable downstream effects not used in dictionary learning")
SHUFFLED = ("Dictionary learning on model with randomly shuffled weights produces mainly single-token and poorly "
            "interpretable features")
BASE64 = "Causal validation of base64 feature function via pinned feature sampling"
ARABIC = "Causal validation that the Arabic feature has the predicted downstream effect on generation"
LOGIT = "Logit Weight Analysis"
CLAMP = "Clamping a feature's value to zero to measure its causal effect on model output."
PINNED = "Pinned Feature Sampling"
Q_METRICS = "what metrics can reliably tell us if dictionary learning has successfully extracted high quality features?"
Q_COUNT = "what is the 'correct number of features' for dictionary learning, and is this question well-posed?"
THINK = "All models exhibit above-baseline representation of the think word when instructed to think about it"


def test_claim_page_seed(store, seed):
    [report] = ingest_paths(store, [seed("003")], embed=False)
    assert report.format == "claim-page"
    claim = store.get_node("claim:learned-features-reflect-the-functionality-of-the-model-and-not-just-the-data-"
                           "distribution-as-evidenced-by-interpretable-downstream-effects-not-used-in-dictionary-learning")
    assert claim.id == cid(CLAIM) and claim.title == CLAIM
    assert claim.text == ("Authors argue features are model properties because logit effects and ablations are "
                          "consistent with feature interpretations")
    assert claim.attrs["page_status"] == "active"
    assert claim.attrs["stated_counts"] == {"findings": 3, "methods": 3, "related_by_similarity": 8}
    assert claim.attrs["listed_counts"] == {"findings": 3, "methods": 3, "related_by_similarity": 7}
    assert claim.attrs["similarity_threshold"] == 0.65
    assert "page_id" not in claim.attrs

    paper = store.get_node("paper:carauleanu-2024")
    assert paper.title == "Marc Carauleanu et al. (2024)"
    assert paper.attrs == {"year": 2024, "authors": ["Marc Carauleanu", "Michael Vaiana", "Judd Rosenblatt",
                                                     "Cameron Berg"],
                           "authors_more": 1, "et_al": True, "title_known": False}

    nodes = {
        make_id("finding", SHUFFLED): ("finding", SHUFFLED, "Controls for dataset structure, showing trained model "
                                      "activations have richer structure than data distribution alone"),
        make_id("finding", BASE64): ("finding", BASE64, ""),
        make_id("finding", ARABIC): ("finding", ARABIC, ""),
        make_id("method", LOGIT): ("method", LOGIT, "Computing each feature's linear effect on output token logits via "
                                   "path expansion through MLP output weights and unembedding matrix"),
        make_id("method", CLAMP): ("method", CLAMP, ""),
        make_id("method", PINNED): ("method", PINNED, "Setting a feature's value to its maximum observed value and "
                                    "sampling from the model to validate causal interpretations"),
        make_id("question", Q_METRICS): ("question", Q_METRICS, "Central methodological gap: current metrics (loss, "
                                         "density histograms, manual inspection) are inadequate"),
        make_id("question", Q_COUNT): ("question", Q_COUNT, "Open question about whether there is a true discrete "
                                       "feature count or a continuous splitting process"),
        make_id("finding", THINK): ("finding", THINK, "In the intentional control experiment, all tested models show "
                                    "above-zero cosine similarity to the think word's concept vector."),
    }
    for nid, (ntype, title, text) in nodes.items():
        n = store.get_node(nid)
        assert (n.type.value, n.title, n.text) == (ntype, title, text), nid
    assert store.count_nodes() == {"claim": 1, "paper": 1, "finding": 4, "method": 3, "question": 2}

    c = claim.id
    assert edges_of(store) == {
        (c, "extracted_from", paper.id): {},
        (make_id("finding", SHUFFLED), "associated_with", c): {"stated": True},
        (make_id("finding", SHUFFLED), "supports", c): {"stated": True},
        (make_id("finding", BASE64), "associated_with", c): {"stated": False},
        (make_id("finding", ARABIC), "associated_with", c): {"stated": False},
        (make_id("method", LOGIT), "supports", c): {"stated": True},
        (make_id("method", CLAMP), "associated_with", c): {"stated": False},
        (make_id("method", PINNED), "supports", c): {"stated": True},
    }
    similar = {(s.other_id, s.other_title, s.other_type.value if s.other_type else None, s.score)
               for s in store.stated_similar(c)}
    assert similar == {
        (None, "Motivation for using sparsity-based dictionary learning on language models", None, None),
        (None, "Scaling laws for dictionary learning are unknown and needed to assess feasibility on frontier models",
         None, None),
        (make_id("question", Q_METRICS), Q_METRICS, "question", 0.794),
        (make_id("question", Q_COUNT), Q_COUNT, "question", 0.778),
        (None, "One of the updates about prosaic ML simulation.", None, None),
        (make_id("finding", THINK), THINK, "finding", 0.769),
        (None, "Describes scaffolding method and the model's meta-learning loop.", None, None),
    }
    texts = {s.other_id: s.other_text for s in store.stated_similar(c) if s.other_id}
    assert texts[make_id("finding", THINK)] == nodes[make_id("finding", THINK)][2]


# -- summary 002 ------------------------------------------------------------------------------------------
TLDR = ["Large language models exhibit emergent features that emerge at specific thresholds of time, space, and scale.",
        "These features can re-emerge unexpectedly in later layers of the model, challenging traditional assumptions "
        "about representational dynamics."]
FINDINGS = ["Results indicate clear temporal and scale-specific thresholds for feature emergence across multiple domains.",
            "Notably, spatial analysis reveals unexpected semantic reactivation, with early-layer features re-emerging at "
            "later layers, challenging standard assumptions about representational dynamics in transformer models."]
CONTRIBUTION = ("The paper introduces a methodology for identifying the emergence of interpretable categorical features "
                "in LLMs using sparse autoencoders, offering a novel perspective on representational dynamics across "
                "time, space, and scale.")
METHODOLOGY = ("Employing sparse autoencoders for mechanistic interpretability to analyze the emergence of "
               "interpretable categorical features within large language models (LLMs)")
RELATED = [("Vladislav Lialin, Sherin Muckatira, Anna Rumshisky et al.",
            ["Vladislav Lialin", "Sherin Muckatira", "Anna Rumshisky"], True),
           ("Oriol Vinyals, Jeff Dean, Sebastian Borgeaud et al.", ["Oriol Vinyals", "Jeff Dean", "Sebastian Borgeaud"], True),
           ("Zeyu Huang, Zihan Qiu, Jie Fu", ["Zeyu Huang", "Zihan Qiu", "Jie Fu"], False),
           ("Jevin West, Damian Hodel", ["Jevin West", "Damian Hodel"], False),
           ("Sanmi Koyejo, Rylan Schaeffer, Brando Miranda", ["Sanmi Koyejo", "Rylan Schaeffer", "Brando Miranda"], False)]


def test_summary_seed(store, seed, birth_title):
    [report] = ingest_paths(store, [seed("002")], title=birth_title, embed=False)
    assert report.format == "summary"
    paper = store.get_node(pid(birth_title))
    assert paper.title == birth_title
    assert paper.text.startswith("This paper studies the emergence of interpretable categorical features")
    assert paper.text.endswith("representational dynamics in transformer models.")
    a = paper.attrs
    assert a["tldr"] == " ".join(TLDR) and a["generated"] == "2025-06-07"
    assert a["methodology"].startswith("The research employs sparse autoencoders")
    assert a["significance"].startswith("This research is important")
    assert a["novelty"].startswith("This work distinguishes itself")
    assert a["title_known"] is True and a["title_norm"] == normalize_title(birth_title)

    assert [store.get_node(cid(t)).attrs["kind"] for t in TLDR] == ["tldr", "tldr"]
    assert store.get_node(cid(CONTRIBUTION)).attrs["kind"] == "contribution"
    assert [store.get_node(make_id("finding", f)).title for f in FINDINGS] == FINDINGS
    technique = store.get_node("method:sparse-autoencoders")
    assert (technique.title, technique.text, technique.attrs) == ("Sparse autoencoders", "", {})
    methodology = store.get_node(make_id("method", METHODOLOGY))
    assert methodology.title == METHODOLOGY and methodology.attrs == {"kind": "methodology"}
    assert methodology.text == a["methodology"]
    # Related works given only by their authors are entries of the paper, not papers titled by their authors.
    assert a["related_works"] == [
        {"key": "related:" + "-".join(x.split()[-1].lower() for x in authors), "authors": authors, "et_al": et_al,
         "title": None, "year": None, "relation": "reference", "line": 10 + k}
        for k, (_, authors, et_al) in enumerate(RELATED)]

    edges = edges_of(store)
    expected = {(cid(t), "extracted_from", paper.id): {} for t in TLDR + [CONTRIBUTION]}
    expected |= {(make_id("finding", f), "extracted_from", paper.id): {} for f in FINDINGS}
    expected[(make_id("finding", FINDINGS[0]), "supports", cid(TLDR[0]))] = {
        "shared_terms": ["scale", "specific", "threshold"]}
    expected[(make_id("finding", FINDINGS[1]), "supports", cid(TLDR[1]))] = {
        "shared_terms": ["assumption", "challeng", "dynamic", "later", "layer", "represent", "unexpect"]}
    expected[(methodology.id, "extracted_from", paper.id)] = {}
    expected[(paper.id, "uses_method", methodology.id)] = {}
    expected[(paper.id, "uses_method", technique.id)] = {}
    expected[(methodology.id, "uses_method", technique.id)] = {}
    assert edges == expected
    assert store.count_nodes() == {"paper": 1, "claim": 3, "finding": 2, "method": 2}
    assert report.warnings == []


def test_summary_without_title_is_refused(store, seed):
    with pytest.raises(InvalidDocument) as e:
        ingest_paths(store, [seed("002")], embed=False)
    assert e.value.exit_code == 2 and "--title" in str(e.value) and e.value.path.endswith(seed("002").name)
    assert store.count_nodes() == {} and store.documents() == []


# -- idempotence and change ---------------------------------------------------------------------------------
def test_reingest_of_all_seeds_is_a_no_op(store, seeds_dir, birth_title):
    first = ingest_paths(store, [seeds_dir], title=birth_title, embed=False)
    assert [r.format for r in first] == ["novelty", "novelty", "summary", "claim-page"]
    nodes, edges = store.count_nodes(), store.count_edges()
    sim = store.sql("SELECT count(*) FROM stated_similarity")[0][0]
    again = ingest_paths(store, [seeds_dir], title=birth_title, embed=False)
    assert all(r.unchanged for r in again)
    assert [r.node_ids for r in again] == [r.node_ids for r in first]
    assert (store.count_nodes(), store.count_edges()) == (nodes, edges)
    assert store.sql("SELECT count(*) FROM stated_similarity")[0][0] == sim == 7
    assert sum(nodes.values()) == 27 + 20 + 8 + 11 - 0  # the four seeds share no node
    assert sum(edges.values()) == 31 + 20 + 11 + 8


def test_changed_novelty_report_updates_in_place(store, seed, tmp_path):
    doc = tmp_path / "report.txt"
    shutil.copy(seed("001"), doc)
    ingest_paths(store, [doc], embed=False)
    before_nodes, before_edges = store.count_nodes(), store.count_edges()
    text = doc.read_text()
    # Reword contribution B's description (both places) and drop its last candidate.
    old_desc = "These functions reflect corpus statistics"
    text = text.replace(old_desc, "These functions mirror statistics of the training corpus")
    text = text.replace("[63] -- Predicting the Semantic Changes in Words across Corpora by Context Swapping PDF\n", "")
    doc.write_text(text)
    [report] = ingest_paths(store, [doc], embed=False)
    assert not report.unchanged
    assert report.nodes_added == {} and report.nodes_updated == {"claim": 1}
    assert report.nodes_removed == {"paper": 1} and report.edges_removed == {"compared_with": 1}
    after_nodes = store.count_nodes()
    assert after_nodes == {**before_nodes, "paper": before_nodes["paper"] - 1}
    assert store.count_edges() == {**before_edges, "compared_with": before_edges["compared_with"] - 1}
    claim = store.get_node(cid("Three basis functions for semantic associations"))
    assert "mirror statistics of the training corpus" in claim.text and old_desc not in claim.text
    assert claim.attrs["candidates_listed"] == 4
    assert not store.has_node(pid("Predicting the Semantic Changes in Words across Corpora by Context Swapping"))


def test_changed_claim_page_updates_scores_and_drops_items(store, seed, tmp_path):
    doc = tmp_path / "page.txt"
    shutil.copy(seed("003"), doc)
    ingest_paths(store, [doc], embed=False)
    text = doc.read_text().replace("question0.794", "question0.801")
    text = text.replace("- Causal validation that the Arabic feature has the predicted downstream effect on generation\n", "")
    doc.write_text(text)
    [report] = ingest_paths(store, [doc], embed=False)
    assert report.nodes_removed == {"finding": 1} and report.edges_removed == {"associated_with": 1}
    scores = {s.other_id: s.score for s in store.stated_similar(cid(CLAIM)) if s.other_id}
    assert scores[make_id("question", Q_METRICS)] == 0.801
    assert store.count_nodes()["finding"] == 3


def test_changed_claim_page_forgets_a_similarity_it_no_longer_states(store, seed, tmp_path):
    doc = tmp_path / "page.txt"
    shutil.copy(seed("003"), doc)
    ingest_paths(store, [doc], embed=False)
    doc.write_text(doc.read_text().replace("- One of the updates about prosaic ML simulation.\n", ""))
    ingest_paths(store, [doc], embed=False)
    assert len(store.stated_similar(cid(CLAIM))) == 6
