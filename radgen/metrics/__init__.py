"""Report metrics: n-gram (BLEU, ROUGE-L, CIDEr-D, METEOR 1.5), semantic (BERTScore, embedding cosine),
clinical efficacy (CheXpert labels; CheXbert / RadGraph from local weights) and bootstrap statistics."""
