"""A small hand-written interpretability graph shared by the search and similarity tests.

`DUP_A` / `DUP_B` are a planted near-duplicate pair (same type, one word apart). `POLY` is the target
of the paraphrase query, which shares no index term with any node here (checked in the tests).
"""
from __future__ import annotations

from claimgraph.graph import Edge, EdgeType, Node, NodeType, make_id

C, F, M, Q, P = NodeType.claim, NodeType.finding, NodeType.method, NodeType.question, NodeType.paper

_ROWS: list[tuple[NodeType, str, str]] = [
    (P, "Towards Monosemanticity: Decomposing Language Models With Dictionary Learning",
     "Sparse dictionary learning on a one-layer transformer's MLP activations."),
    (P, "Interpretability in the Wild: a Circuit for Indirect Object Identification in GPT-2 Small",
     "Reverse-engineering how GPT-2 small completes sentences with the indirect object."),
    (P, "Toy Models of Superposition", "Small ReLU networks store more features than they have dimensions."),
    (C, "Learned dictionary features reflect the model's functionality",
     "Features found by the sparse autoencoder are causally used by the network, not artefacts of the data."),
    (C, "Sparse autoencoders recover monosemantic features from superposition in a one-layer transformer",
     "Dictionary learning extracts interpretable directions that single neurons do not provide."),
    (C, "Sparse autoencoders recover monosemantic features from superposition in one-layer transformers",
     "Dictionary learning extracts interpretable directions that single neurons do not provide."),
    (C, "Polysemantic neurons respond to several unrelated concepts",
     "A single MLP neuron activates on academic citations, Korean text and HTTP requests alike."),
    (C, "Superposition lets networks represent more features than dimensions",
     "When features are sparse, a layer packs them into nearly orthogonal directions with interference."),
    (C, "Induction heads implement in-context learning in transformers",
     "A two-head circuit copies the token that followed an earlier occurrence of the current token."),
    (C, "Activation patching localises the indirect object identification circuit",
     "Replacing activations from a corrupted prompt reveals which attention heads move the name."),
    (F, "Features vanish when the transformer's weights are shuffled",
     "Training the autoencoder on a model with randomly permuted weights yields no interpretable features."),
    (F, "A base64 feature fires on encoded strings",
     "One dictionary feature responds specifically to base64-encoded text and predicts base64 tokens."),
    (F, "An Arabic script feature responds to Arabic text",
     "A learned feature activates on Arabic script and is absent from any single neuron."),
    (F, "Name mover heads copy the indirect object to the output",
     "Attention heads in late layers attend to the name and write it to the residual stream."),
    (F, "Interference between sparse features grows with feature density",
     "As inputs become less sparse, the toy model drops features instead of superposing them."),
    (F, "Dead latents make up a fraction of the dictionary",
     "Some autoencoder units never activate on the evaluation set after training."),
    (M, "Sparse autoencoder", "A one-hidden-layer autoencoder with an L1 penalty, trained on model activations."),
    (M, "Activation patching", "Swap activations between clean and corrupted runs to measure a component's effect."),
    (M, "Logit attribution", "Decompose the output logits into contributions from each residual stream component."),
    (M, "Weight shuffling control", "Compare against a model whose weights are randomly permuted."),
    (Q, "Do features found in small models transfer to larger models?",
     "Whether dictionaries learned on one-layer models predict what appears at scale."),
    (Q, "How should feature interpretability be evaluated?",
     "Human raters, automated explanations, or downstream task performance."),
    (C, "Gradient descent discovers algorithmic solutions to modular addition",
     "A small transformer trained on modular arithmetic learns a Fourier-based algorithm after grokking."),
    (F, "Grokking coincides with the formation of Fourier features",
     "Test accuracy jumps when the embedding concentrates on a few frequencies."),
    (C, "Linear probes read out board state from an Othello model",
     "A transformer trained on legal moves encodes the board in a linear, player-relative basis."),
    (M, "Linear probing", "Fit a linear classifier on frozen activations to test whether information is present."),
    (F, "Steering with a feature direction changes model outputs",
     "Clamping a learned feature to a high value makes the model talk about the feature's topic."),
    (Q, "Are attention heads the right unit of analysis for circuits?",
     "Heads may split or share roles, so circuits might be better described by features."),
]

NODES: list[Node] = [Node(id=make_id(t, title), type=t, title=title, text=text) for t, title, text in _ROWS]
BY_TITLE = {n.title: n for n in NODES}


def nid(title: str) -> str:
    return BY_TITLE[title].id


MONO = nid("Towards Monosemanticity: Decomposing Language Models With Dictionary Learning")
DUP_A = nid("Sparse autoencoders recover monosemantic features from superposition in a one-layer transformer")
DUP_B = nid("Sparse autoencoders recover monosemantic features from superposition in one-layer transformers")
POLY = nid("Polysemantic neurons respond to several unrelated concepts")
IOI = nid("Activation patching localises the indirect object identification circuit")
SAE = nid("Sparse autoencoder")
SHUFFLE = nid("Features vanish when the transformer's weights are shuffled")
FUNC = nid("Learned dictionary features reflect the model's functionality")
NAME_MOVER = nid("Name mover heads copy the indirect object to the output")

EDGES: list[Edge] = [
    Edge(src=FUNC, type=EdgeType.extracted_from, dst=MONO),
    Edge(src=SHUFFLE, type=EdgeType.supports, dst=FUNC),
    Edge(src=FUNC, type=EdgeType.uses_method, dst=SAE),
    Edge(src=NAME_MOVER, type=EdgeType.supports, dst=IOI),
]
