import torch

from paramem.metrics.yes_no import fit_threshold
from paramem.model.loading import tiny_model
from paramem.model.prompts import encode_prompt
from paramem.model.scoring import YesNoScorer, is_yes_no_question


def test_yes_no_questions_are_recognised():
    assert is_yes_no_question("Did we talk about Kyoto?")
    assert is_yes_no_question("have I mentioned my cat?")
    assert not is_yes_no_question("What is my cat called?")
    assert not is_yes_no_question("Did we talk about Kyoto")


def test_batched_prefix_cached_scores_equal_one_by_one_full_passes():
    model, tokenizer = tiny_model()
    model = model.float()
    scorer = YesNoScorer(model, tokenizer, system="A long shared system prompt " * 5, batch_size=3)
    questions = ["Did we?", "Did we talk about a much longer thing than that?", "Is it?", "Have I told you so?"]
    batched = scorer.log_odds(questions)
    for question, score in zip(questions, batched):
        ids = torch.tensor([encode_prompt(tokenizer, question, scorer.system)])
        logp = model(input_ids=ids).logits[0, -1].float().log_softmax(-1)
        expected = (logp[scorer.yes_ids].logsumexp(-1) - logp[scorer.no_ids].logsumexp(-1)).item()
        assert abs(score - expected) < 1e-4


def test_threshold_fit_on_heldout_pairs_separates_them():
    scores = [2.0, 1.5, 1.0, 0.2, -0.5, 0.4]
    labels = ["yes", "yes", "yes", "no", "no", "no"]
    threshold = fit_threshold(scores, labels)
    assert 0.4 < threshold < 1.0
    assert fit_threshold([1.0, 1.0], ["yes", "yes"]) == 0.0  # nothing to fit without both labels


def test_answer_many_reads_the_shared_start_once_and_answers_as_generate_does_alone(monkeypatch):
    import paramem.read.answer
    from paramem.read.answer import answer_many

    model, tokenizer = tiny_model()
    context = "You remember your past conversations with this user.\n\n" + "Past conversation text. " * 40
    questions = ["What did I plant?", "Where do I live?", "Hi?", "And what did I say about the long walk home?"]
    systems = [context, context, "You remember your past conversations with this user.", context]
    expected = []
    for question, system in zip(questions, systems):
        ids = torch.tensor([encode_prompt(tokenizer, question, system)])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False)
        expected.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    assert answer_many(model, tokenizer, questions, systems, 6) == expected
    monkeypatch.setattr(paramem.read.answer, "KV_COPY_BUDGET", 1)  # one row at a time
    assert answer_many(model, tokenizer, questions, systems, 6) == expected
    assert answer_many(model, tokenizer, [], [], 6) == []
