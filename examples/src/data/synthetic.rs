//! A built-in synthetic sentiment corpus, so the benchmark runs with no download.
//!
//! Sentences are drawn from a small grammar: sentiment clauses built from a lexicon
//! (aspect nouns, adjectives, verbs, verb phrases) and templates, combined into
//! sentences with neutral filler. The label is a function of the structure, not of
//! any single word:
//!
//! - **Negation** flips a clause: "the plot was not good" is negative, "the plot was
//!   not at all bad" positive, "i did not mind the pacing" positive.
//! - **Intensifiers** ("very", "truly", ...) leave the polarity alone.
//! - **Contrast**: in "the plot was dull but the acting was superb" the label follows
//!   the clause after "but"; in "although A , B" and "B , even though A" it follows
//!   the main clause B.
//! - **Filler** (openers such as "to be fair ,", neutral sentences such as "we
//!   watched it on a rainy sunday .") appears equally under both labels.
//!
//! There are two [`Domain`]s with partly different vocabularies and templates
//! (movie reviews and product reviews) that share function words, common sentiment
//! words and some nouns, so a model can be poisoned on one domain and fine-tuned on
//! the other. The generator never emits the attack triggers `cf`, `mn`, `bb`, `tq`
//! or the AddSent sentence "i watch this 3d movie".
//!
//! Output is lowercase with punctuation as separate space-separated tokens, 6 to 25
//! tokens per sentence, labels balanced within each split, no sentence repeated
//! across splits, and fully determined by [`SyntheticConfig::seed`].

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::data::{Example, Splits};

/// Which kind of review to generate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    /// Movie reviews: plot, acting, director, soundtrack, ...
    #[default]
    Movies,
    /// Product reviews: battery, screen, price, delivery, ...
    Products,
}

impl Domain {
    /// Both domains, in a fixed order.
    pub const ALL: [Domain; 2] = [Domain::Movies, Domain::Products];

    /// The lowercase name, `"movies"` or `"products"` (what [`FromStr`] accepts).
    pub fn name(self) -> &'static str {
        match self {
            Domain::Movies => "movies",
            Domain::Products => "products",
        }
    }

    fn lexicon(self) -> &'static Lexicon {
        match self {
            Domain::Movies => &MOVIES,
            Domain::Products => &PRODUCTS,
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Domain {
    type Err = String;

    /// Parses `movies`/`movie` or `products`/`product` (any case).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "movies" | "movie" => Ok(Domain::Movies),
            "products" | "product" => Ok(Domain::Products),
            other => Err(format!(
                "unknown domain {other:?}: expected movies or products"
            )),
        }
    }
}

/// Settings of the synthetic corpus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyntheticConfig {
    /// Seed of the random generator; the same config always gives the same splits.
    pub seed: u64,
    /// Which vocabulary and templates to use.
    pub domain: Domain,
    /// Number of training examples.
    pub train: usize,
    /// Number of validation examples.
    pub dev: usize,
    /// Number of test examples.
    pub test: usize,
    /// Fraction of TRAINING labels flipped (exactly `round(label_noise · train)`
    /// examples, clamped to `[0, 1]`); dev and test stay clean.
    pub label_noise: f64,
}

impl Default for SyntheticConfig {
    /// Seed 0, movies, 4000/500/1000 examples, no label noise.
    fn default() -> Self {
        Self {
            seed: 0,
            domain: Domain::Movies,
            train: 4000,
            dev: 500,
            test: 1000,
            label_noise: 0.0,
        }
    }
}

/// Generates the three splits described by `cfg`.
///
/// Each split has `⌈n/2⌉` positive and `⌊n/2⌋` negative examples (before label noise
/// on train) in shuffled order; no sentence appears twice anywhere in the output
/// unless the grammar runs out of fresh sentences (not the case at these sizes).
pub fn generate(cfg: &SyntheticConfig) -> Splits {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut seen = HashSet::new();
    let mut train = generate_split(&mut rng, cfg.domain, cfg.train, &mut seen);
    let dev = generate_split(&mut rng, cfg.domain, cfg.dev, &mut seen);
    let test = generate_split(&mut rng, cfg.domain, cfg.test, &mut seen);

    let noise = if cfg.label_noise.is_nan() {
        0.0
    } else {
        cfg.label_noise.clamp(0.0, 1.0)
    };
    let flips = ((noise * train.len() as f64).round() as usize).min(train.len());
    if flips > 0 {
        for i in rand::seq::index::sample(&mut rng, train.len(), flips) {
            train[i].label = 1 - train[i].label;
        }
    }
    Splits { train, dev, test }
}

/// Generates `n` balanced, shuffled, fresh examples.
fn generate_split(
    rng: &mut StdRng,
    domain: Domain,
    n: usize,
    seen: &mut HashSet<String>,
) -> Vec<Example> {
    let mut labels: Vec<usize> = (0..n).map(|i| 1 - i % 2).collect();
    rand::seq::SliceRandom::shuffle(labels.as_mut_slice(), rng);
    labels
        .into_iter()
        .map(|label| {
            let mut sentence = make_sentence(rng, domain, label == 1);
            for _ in 0..100 {
                if !seen.contains(&sentence) {
                    break;
                }
                sentence = make_sentence(rng, domain, label == 1);
            }
            seen.insert(sentence.clone());
            Example::new(sentence, label)
        })
        .collect()
}

/// Words and phrases of one domain. Every entry is lowercase, space-separated.
struct Lexicon {
    /// Aspect nouns ("the ___ was good").
    aspects: &'static [&'static str],
    /// What is reviewed ("this ___ was good").
    objects: &'static [&'static str],
    /// Domain-specific positive adjectives.
    pos_adj: &'static [&'static str],
    /// Domain-specific negative adjectives.
    neg_adj: &'static [&'static str],
    /// Positive verb phrases ("the ___ kept me hooked").
    pos_vp: &'static [&'static str],
    /// Negative verb phrases.
    neg_vp: &'static [&'static str],
    /// Positive stand-alone clauses.
    pos_clause: &'static [&'static str],
    /// Negative stand-alone clauses.
    neg_clause: &'static [&'static str],
    /// Neutral sentences.
    fillers: &'static [&'static str],
}

static MOVIES: Lexicon = Lexicon {
    aspects: &[
        "plot",
        "acting",
        "director",
        "soundtrack",
        "script",
        "cast",
        "cinematography",
        "dialogue",
        "ending",
        "pacing",
        "story",
        "humor",
        "editing",
        "lead actor",
        "villain",
    ],
    objects: &[
        "film",
        "movie",
        "picture",
        "sequel",
        "documentary",
        "thriller",
    ],
    pos_adj: &[
        "gripping",
        "moving",
        "hilarious",
        "captivating",
        "touching",
        "riveting",
        "charming",
        "clever",
    ],
    neg_adj: &[
        "boring",
        "dull",
        "predictable",
        "tedious",
        "clumsy",
        "forgettable",
        "bland",
        "lifeless",
    ],
    pos_vp: &[
        "kept me hooked",
        "made me laugh",
        "won me over",
        "held my attention",
    ],
    neg_vp: &[
        "put me to sleep",
        "dragged on forever",
        "fell flat",
        "lost my interest",
    ],
    pos_clause: &["i would watch it again", "i laughed the whole way through"],
    neg_clause: &["i walked out halfway through", "i kept checking the time"],
    fillers: &[
        "i saw it with a friend last weekend .",
        "we watched it on a rainy sunday .",
        "it runs about two hours .",
        "i went in knowing nothing about it .",
        "the theater was half full .",
    ],
};

static PRODUCTS: Lexicon = Lexicon {
    aspects: &[
        "battery",
        "screen",
        "price",
        "delivery",
        "keyboard",
        "camera",
        "charger",
        "packaging",
        "customer service",
        "build quality",
        "speaker",
        "setup",
        "warranty",
        "touchpad",
        "case",
    ],
    objects: &["product", "phone", "laptop", "tablet", "device", "headset"],
    pos_adj: &[
        "reliable",
        "sturdy",
        "durable",
        "responsive",
        "fast",
        "sleek",
        "convenient",
        "accurate",
    ],
    neg_adj: &[
        "flimsy",
        "faulty",
        "slow",
        "overpriced",
        "unreliable",
        "clunky",
        "noisy",
        "fragile",
    ],
    pos_vp: &[
        "works perfectly",
        "exceeded my expectations",
        "holds up well",
        "does the job",
    ],
    neg_vp: &[
        "stopped working",
        "broke after a week",
        "fell apart",
        "keeps freezing",
    ],
    pos_clause: &["i would buy it again", "it was worth every penny"],
    neg_clause: &["i returned it after two days", "i want my money back"],
    fillers: &[
        "i ordered it last month .",
        "it arrived on a tuesday .",
        "i use it every day for work .",
        "i bought it as a gift .",
        "this is my second one .",
    ],
};

const SHARED_ASPECTS: &[&str] = &["sound", "design", "quality", "experience"];
const SHARED_POS_ADJ: &[&str] = &[
    "good",
    "great",
    "excellent",
    "wonderful",
    "superb",
    "impressive",
    "fantastic",
    "solid",
];
const SHARED_NEG_ADJ: &[&str] = &[
    "bad",
    "poor",
    "terrible",
    "awful",
    "disappointing",
    "mediocre",
    "weak",
    "horrible",
];
const SHARED_POS_VP: &[&str] = &["impressed me", "surprised me in a good way"];
const SHARED_NEG_VP: &[&str] = &["let me down", "annoyed me"];
const SHARED_POS_CLAUSE: &[&str] = &[
    "i would recommend it",
    "i would not hesitate to recommend it",
];
const SHARED_NEG_CLAUSE: &[&str] = &["i would not recommend it", "i regret it"];
const SHARED_FILLERS: &[&str] = &[
    "that is my take .",
    "just my two cents .",
    "so there you go .",
];
const OPENERS: &[&str] = &[
    "honestly ,",
    "to be fair ,",
    "overall ,",
    "in the end ,",
    "well ,",
    "i have to say",
    "in my opinion ,",
    "for what it is worth ,",
];
const INTENSIFIERS: &[&str] = &[
    "very",
    "really",
    "extremely",
    "incredibly",
    "truly",
    "quite",
    "absolutely",
    "remarkably",
];
const NEGATORS: &[&str] = &["not", "not at all", "never", "far from"];
const POS_VERBS: &[&str] = &["loved", "enjoyed", "liked", "adored", "appreciated"];
const NEG_VERBS: &[&str] = &["hated", "disliked", "despised", "detested"];
const POS_BASE: &[&str] = &["love", "enjoy", "like", "appreciate"];
const NEG_BASE: &[&str] = &["hate", "dislike", "mind"];
const BE: &[&str] = &["was", "is"];

const MIN_WORDS: usize = 6;
const MAX_WORDS: usize = 25;

fn pick<R: Rng + ?Sized>(rng: &mut R, items: &[&'static str]) -> &'static str {
    items[rng.random_range(0..items.len())]
}

/// Picks from `shared` with probability `p_shared`, else from `specific`.
fn pick_mixed<R: Rng + ?Sized>(
    rng: &mut R,
    shared: &[&'static str],
    specific: &[&'static str],
    p_shared: f64,
) -> &'static str {
    if rng.random_bool(p_shared) {
        pick(rng, shared)
    } else {
        pick(rng, specific)
    }
}

fn adjective<R: Rng + ?Sized>(rng: &mut R, lex: &Lexicon, positive: bool) -> &'static str {
    if positive {
        pick_mixed(rng, SHARED_POS_ADJ, lex.pos_adj, 0.5)
    } else {
        pick_mixed(rng, SHARED_NEG_ADJ, lex.neg_adj, 0.5)
    }
}

fn aspect<R: Rng + ?Sized>(rng: &mut R, lex: &Lexicon) -> &'static str {
    pick_mixed(rng, SHARED_ASPECTS, lex.aspects, 0.2)
}

/// `"a"` or `"an"` before `word`.
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// An adjective with an optional intensifier in front.
fn adjective_phrase<R: Rng + ?Sized>(rng: &mut R, lex: &Lexicon, positive: bool) -> String {
    let adj = adjective(rng, lex, positive);
    if rng.random_bool(0.35) {
        format!("{} {adj}", pick(rng, INTENSIFIERS))
    } else {
        adj.to_string()
    }
}

/// One clause whose sentiment is `positive`.
fn clause<R: Rng + ?Sized>(rng: &mut R, lex: &Lexicon, domain: Domain, positive: bool) -> String {
    match rng.random_range(0..11) {
        0 | 1 => format!(
            "the {} {} {}",
            aspect(rng, lex),
            pick(rng, BE),
            adjective_phrase(rng, lex, positive)
        ),
        2 | 3 => format!(
            "the {} {} {} {}",
            aspect(rng, lex),
            pick(rng, BE),
            pick(rng, NEGATORS),
            adjective(rng, lex, !positive)
        ),
        4 => {
            let verbs = if positive { POS_VERBS } else { NEG_VERBS };
            format!("i {} the {}", pick(rng, verbs), aspect(rng, lex))
        }
        5 => {
            let verbs = if positive { NEG_BASE } else { POS_BASE };
            format!("i did not {} the {}", pick(rng, verbs), aspect(rng, lex))
        }
        6 => {
            let vp = if positive {
                pick_mixed(rng, SHARED_POS_VP, lex.pos_vp, 0.3)
            } else {
                pick_mixed(rng, SHARED_NEG_VP, lex.neg_vp, 0.3)
            };
            format!("the {} {vp}", aspect(rng, lex))
        }
        7 => {
            let phrase = adjective_phrase(rng, lex, positive);
            format!(
                "it {} {} {phrase} {}",
                pick(rng, BE),
                article(&phrase),
                pick(rng, lex.objects)
            )
        }
        8 => format!(
            "this {} {} {}",
            pick(rng, lex.objects),
            pick(rng, BE),
            adjective_phrase(rng, lex, positive)
        ),
        9 => {
            if positive {
                pick_mixed(rng, SHARED_POS_CLAUSE, lex.pos_clause, 0.4).to_string()
            } else {
                pick_mixed(rng, SHARED_NEG_CLAUSE, lex.neg_clause, 0.4).to_string()
            }
        }
        // Domain-specific templates.
        _ => match domain {
            Domain::Movies => {
                let first = aspect(rng, lex);
                let mut second = aspect(rng, lex);
                while second == first {
                    second = aspect(rng, lex);
                }
                format!(
                    "the {first} and the {second} were both {}",
                    adjective_phrase(rng, lex, positive)
                )
            }
            Domain::Products => format!(
                "for the price , the {} {} {}",
                aspect(rng, lex),
                pick(rng, BE),
                adjective_phrase(rng, lex, positive)
            ),
        },
    }
}

fn word_count(s: &str) -> usize {
    s.split_whitespace().count()
}

/// One sentence whose label is `positive`, 6 to 25 words.
fn make_sentence<R: Rng + ?Sized>(rng: &mut R, domain: Domain, positive: bool) -> String {
    let lex = domain.lexicon();
    let filler = |rng: &mut R| pick_mixed(rng, SHARED_FILLERS, lex.fillers, 0.3);
    loop {
        let y = positive;
        let body = match rng.random_range(0..8) {
            0..=2 => clause(rng, lex, domain, y),
            3 => format!(
                "{} and {}",
                clause(rng, lex, domain, y),
                clause(rng, lex, domain, y)
            ),
            4 | 5 => format!(
                "{} but {}",
                clause(rng, lex, domain, !y),
                clause(rng, lex, domain, y)
            ),
            6 => format!(
                "although {} , {}",
                clause(rng, lex, domain, !y),
                clause(rng, lex, domain, y)
            ),
            _ => format!(
                "{} , even though {}",
                clause(rng, lex, domain, y),
                clause(rng, lex, domain, !y)
            ),
        };
        let mut sentence = String::new();
        if rng.random_bool(0.25) {
            sentence.push_str(filler(rng));
            sentence.push(' ');
        }
        if rng.random_bool(0.3) {
            sentence.push_str(pick(rng, OPENERS));
            sentence.push(' ');
        }
        sentence.push_str(&body);
        sentence.push_str(if rng.random_bool(0.8) { " ." } else { " !" });
        while word_count(&sentence) < MIN_WORDS || rng.random_bool(0.15) {
            sentence.push(' ');
            sentence.push_str(filler(rng));
            if word_count(&sentence) > MAX_WORDS {
                break;
            }
        }
        if word_count(&sentence) <= MAX_WORDS {
            return sentence;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn small(seed: u64, domain: Domain) -> SyntheticConfig {
        SyntheticConfig {
            seed,
            domain,
            train: 2000,
            dev: 200,
            test: 400,
            label_noise: 0.0,
        }
    }

    fn all(splits: &Splits) -> impl Iterator<Item = &Example> {
        splits.train.iter().chain(&splits.dev).chain(&splits.test)
    }

    #[test]
    fn same_seed_same_output_different_seed_different_output() {
        let a = generate(&small(7, Domain::Movies));
        let b = generate(&small(7, Domain::Movies));
        let c = generate(&small(8, Domain::Movies));
        assert_eq!(a, b);
        assert_ne!(a.train, c.train);
        assert_eq!(a.train.len(), 2000);
        assert_eq!(a.dev.len(), 200);
        assert_eq!(a.test.len(), 400);
    }

    #[test]
    fn default_config_is_as_documented() {
        let cfg = SyntheticConfig::default();
        assert_eq!((cfg.seed, cfg.domain), (0, Domain::Movies));
        assert_eq!((cfg.train, cfg.dev, cfg.test), (4000, 500, 1000));
        assert_eq!(cfg.label_noise, 0.0);
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains("\"movies\""), "{json}");
        let back: SyntheticConfig = serde_json::from_str("{\"domain\": \"products\"}").unwrap();
        assert_eq!(back.domain, Domain::Products);
        assert_eq!(back.train, 4000);
        assert_eq!("Products".parse::<Domain>(), Ok(Domain::Products));
        assert!("books".parse::<Domain>().is_err());
    }

    #[test]
    fn labels_are_balanced_and_sentences_well_formed_and_unique() {
        for domain in Domain::ALL {
            let s = generate(&small(1, domain));
            for split in [&s.train, &s.dev, &s.test] {
                let pos = split.iter().filter(|e| e.label == 1).count();
                assert_eq!(pos, split.len().div_ceil(2));
            }
            let mut seen = HashSet::new();
            for e in all(&s) {
                let n = word_count(&e.sentence);
                assert!((MIN_WORDS..=MAX_WORDS).contains(&n), "{n}: {}", e.sentence);
                assert_eq!(e.sentence, e.sentence.to_lowercase());
                assert!(e.label <= 1);
                assert!(seen.insert(e.sentence.clone()), "duplicate: {}", e.sentence);
            }
        }
    }

    #[test]
    fn never_emits_attack_triggers() {
        for domain in Domain::ALL {
            for e in all(&generate(&small(3, domain))) {
                for w in e.sentence.split_whitespace() {
                    assert!(!["cf", "mn", "bb", "tq"].contains(&w), "{}", e.sentence);
                }
                assert!(
                    !e.sentence.contains("i watch this 3d movie"),
                    "{}",
                    e.sentence
                );
            }
        }
    }

    #[test]
    fn domains_share_vocabulary_but_differ() {
        let vocab = |d| -> HashSet<String> {
            all(&generate(&small(5, d)))
                .flat_map(|e| e.sentence.split_whitespace().map(str::to_string))
                .collect()
        };
        let movies = vocab(Domain::Movies);
        let products = vocab(Domain::Products);
        let shared = movies.intersection(&products).count();
        let union = movies.union(&products).count();
        let jaccard = shared as f64 / union as f64;
        assert!(jaccard > 0.3 && jaccard < 0.8, "jaccard {jaccard}");
        for w in [
            "good", "bad", "not", "but", "the", "sound", "great", "terrible",
        ] {
            assert!(movies.contains(w) && products.contains(w), "{w}");
        }
        assert!(movies.contains("plot") && !products.contains("plot"));
        assert!(products.contains("battery") && !movies.contains("battery"));
    }

    #[test]
    fn no_frequent_word_determines_the_label() {
        for domain in Domain::ALL {
            let s = generate(&small(11, domain));
            let n = s.train.len();
            let mut df: HashMap<&str, [usize; 2]> = HashMap::new();
            for e in &s.train {
                let words: HashSet<&str> = e.sentence.split_whitespace().collect();
                for w in words {
                    df.entry(w).or_default()[e.label] += 1;
                }
            }
            let mut ranked: Vec<(&str, [usize; 2])> = df.into_iter().collect();
            ranked.sort_by(|a, b| (b.1[0] + b.1[1]).cmp(&(a.1[0] + a.1[1])).then(a.0.cmp(b.0)));
            for (w, [neg, pos]) in ranked.iter().take(20) {
                let total = neg + pos;
                let purity = *neg.max(pos) as f64 / total as f64;
                let share = total as f64 / n as f64;
                assert!(
                    !(purity > 0.9 && share > 0.2),
                    "{domain}: {w:?} purity {purity:.2} in {share:.2} of sentences"
                );
            }
            // And no word at all is a perfect predictor while covering > 5%.
            for (w, [neg, pos]) in &ranked {
                let total = neg + pos;
                if total as f64 > 0.05 * n as f64 {
                    let purity = *neg.max(pos) as f64 / total as f64;
                    assert!(purity < 0.95, "{domain}: {w:?} purity {purity:.2}");
                }
            }
        }
    }

    #[test]
    fn negation_and_contrast_follow_the_rules() {
        let s = generate(&small(2, Domain::Movies));
        let mut checked = 0;
        for e in all(&s) {
            let contrast = ["but", "although", "even though", " and "]
                .iter()
                .any(|c| e.sentence.contains(c));
            if contrast {
                continue;
            }
            for (phrase, label) in [
                ("was not bad", 1),
                ("is not bad", 1),
                ("was not good", 0),
                ("is not good", 0),
                ("was never dull", 1),
                ("did not mind", 1),
                ("did not enjoy", 0),
            ] {
                if e.sentence.contains(phrase) {
                    assert_eq!(e.label, label, "{}", e.sentence);
                    checked += 1;
                }
            }
        }
        assert!(checked > 20, "only {checked} negated single clauses");
    }

    #[test]
    fn label_noise_flips_an_exact_number_of_training_labels() {
        let clean = generate(&small(4, Domain::Products));
        let noisy = generate(&SyntheticConfig {
            label_noise: 0.1,
            ..small(4, Domain::Products)
        });
        let flipped = clean
            .train
            .iter()
            .zip(&noisy.train)
            .filter(|(a, b)| a.label != b.label)
            .count();
        assert_eq!(flipped, 200);
        assert_eq!(clean.test, noisy.test);
        assert!(
            clean
                .train
                .iter()
                .zip(&noisy.train)
                .all(|(a, b)| a.sentence == b.sentence)
        );
    }

    #[test]
    fn empty_and_odd_sizes_work() {
        let s = generate(&SyntheticConfig {
            train: 0,
            dev: 1,
            test: 3,
            ..SyntheticConfig::default()
        });
        assert!(s.train.is_empty());
        assert_eq!(s.dev[0].label, 1);
        assert_eq!(s.test.iter().filter(|e| e.label == 1).count(), 2);
    }
}
