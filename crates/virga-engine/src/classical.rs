//! Classical ML (smartcore): training on bundled datasets and a documented
//! file format.
//!
//! A `.model` file is JSON:
//! `{"format": "virga-classical", "version": 1, "algorithm": "logistic",
//!   "dataset": "iris", "n_features": 4, "feature_names": [...],
//!   "classes": [...], "metrics": {"accuracy": 0.97}, "fitted": {...}}`
//! where `fitted` is the smartcore model, serialised by serde.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use smartcore::cluster::kmeans::{KMeans, KMeansParameters};
use smartcore::decomposition::pca::{PCAParameters, PCA};
use smartcore::ensemble::random_forest_classifier::{
    RandomForestClassifier, RandomForestClassifierParameters,
};
use smartcore::linalg::basic::arrays::Array;
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linear::logistic_regression::LogisticRegression;

use crate::datasets::Table;
use crate::{EngineError, Model, ModelInfo, Task};

const FORMAT: &str = "virga-classical";
const VERSION: u32 = 1;
/// Seed of every random choice in training, so a model is reproducible.
const SEED: u64 = 42;

type X = DenseMatrix<f64>;
type Y = Vec<i64>;

/// The algorithms `virga models train` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    Logistic,
    RandomForest,
    Kmeans,
    Pca,
}

impl Algorithm {
    pub const NAMES: &'static [&'static str] = &["logistic", "random-forest", "kmeans", "pca"];

    pub fn parse(s: &str) -> Result<Algorithm, EngineError> {
        Ok(match s {
            "logistic" => Algorithm::Logistic,
            "random-forest" => Algorithm::RandomForest,
            "kmeans" => Algorithm::Kmeans,
            "pca" => Algorithm::Pca,
            "svm" | "gmm" => {
                return Err(EngineError::Unknown(format!(
                    "algorithm {s:?} is not available yet; use one of {}",
                    Self::NAMES.join(", ")
                )))
            }
            other => {
                return Err(EngineError::Unknown(format!(
                    "unknown algorithm {other:?}: use one of {}",
                    Self::NAMES.join(", ")
                )))
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Logistic => "logistic",
            Algorithm::RandomForest => "random-forest",
            Algorithm::Kmeans => "kmeans",
            Algorithm::Pca => "pca",
        }
    }

    fn task(self) -> Task {
        match self {
            Algorithm::Logistic | Algorithm::RandomForest => Task::TabularClassification,
            Algorithm::Kmeans => Task::Clustering,
            Algorithm::Pca => Task::Decomposition,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", content = "model", rename_all = "kebab-case")]
enum Fitted {
    Logistic(LogisticRegression<f64, i64, X, Y>),
    RandomForest(RandomForestClassifier<f64, i64, X, Y>),
    Kmeans(KMeans<f64, i64, X, Y>),
    Pca(PCA<f64, X>),
}

/// The on-disk envelope.
#[derive(Debug, Serialize, Deserialize)]
struct ModelFile {
    format: String,
    version: u32,
    algorithm: Algorithm,
    dataset: String,
    n_features: usize,
    feature_names: Vec<String>,
    classes: Vec<String>,
    output_width: usize,
    metrics: BTreeMap<String, f64>,
    fitted: Fitted,
}

/// A classical model, trained or loaded.
pub struct ClassicalModel {
    info: ModelInfo,
    file: ModelFile,
}

fn matrix(rows: &[Vec<f64>]) -> Result<X, EngineError> {
    DenseMatrix::from_2d_vec(&rows.to_vec()).map_err(|e| EngineError::Input(e.to_string()))
}

fn fail(e: impl std::fmt::Display) -> EngineError {
    EngineError::Inference(e.to_string())
}

/// A seeded 80/20 split (a Fisher-Yates shuffle driven by an LCG).
fn split(t: &Table) -> (Vec<Vec<f64>>, Y, Vec<Vec<f64>>, Y) {
    let mut idx: Vec<usize> = (0..t.rows.len()).collect();
    let mut state = SEED;
    for i in (1..idx.len()).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        idx.swap(i, (state >> 33) as usize % (i + 1));
    }
    let cut = idx.len() * 4 / 5;
    let pick = |ix: &[usize]| -> (Vec<Vec<f64>>, Y) {
        (
            ix.iter().map(|&i| t.rows[i].clone()).collect(),
            ix.iter().map(|&i| t.labels[i]).collect(),
        )
    };
    let (a, b) = pick(&idx[..cut]);
    let (c, d) = pick(&idx[cut..]);
    (a, b, c, d)
}

fn accuracy(pred: &[i64], truth: &[i64]) -> f64 {
    let hits = pred.iter().zip(truth).filter(|(p, t)| p == t).count();
    hits as f64 / truth.len().max(1) as f64
}

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

impl ClassicalModel {
    /// Trains `algorithm` on `table` and reports its metrics (held-out
    /// accuracy for classifiers, inertia for k-means, retained variance for PCA).
    pub fn train(algorithm: Algorithm, table: &Table) -> Result<ClassicalModel, EngineError> {
        let mut metrics = BTreeMap::new();
        let n_features = table
            .feature_names
            .len()
            .max(table.rows.first().map_or(0, Vec::len));
        let mut output_width = 1;
        let fitted = match algorithm {
            Algorithm::Logistic | Algorithm::RandomForest => {
                let (xtr, ytr, xte, yte) = split(table);
                let (mx, mt) = (matrix(&xtr)?, matrix(&xte)?);
                let (fitted, pred) = if algorithm == Algorithm::Logistic {
                    let m = LogisticRegression::fit(&mx, &ytr, Default::default()).map_err(fail)?;
                    let p = m.predict(&mt).map_err(fail)?;
                    (Fitted::Logistic(m), p)
                } else {
                    let params = RandomForestClassifierParameters::default()
                        .with_n_trees(50)
                        .with_seed(SEED);
                    let m = RandomForestClassifier::fit(&mx, &ytr, params).map_err(fail)?;
                    let p = m.predict(&mt).map_err(fail)?;
                    (Fitted::RandomForest(m), p)
                };
                metrics.insert("accuracy".into(), accuracy(&pred, &yte));
                metrics.insert("test_rows".into(), yte.len() as f64);
                fitted
            }
            Algorithm::Kmeans => {
                let k = table.class_names.len().max(2);
                let mx = matrix(&table.rows)?;
                let mut params = KMeansParameters::default().with_k(k).with_max_iter(300);
                params.seed = Some(SEED);
                let m: KMeans<f64, i64, X, Y> = KMeans::fit(&mx, params).map_err(fail)?;
                let ids = m.predict(&mx).map_err(fail)?;
                // Inertia: squared distance of each row to its cluster's mean.
                let mut sums = vec![vec![0.0; n_features]; k];
                let mut counts = vec![0usize; k];
                for (r, &c) in table.rows.iter().zip(&ids) {
                    counts[c as usize] += 1;
                    for (s, v) in sums[c as usize].iter_mut().zip(r) {
                        *s += v;
                    }
                }
                let centroids: Vec<Vec<f64>> = sums
                    .iter()
                    .zip(&counts)
                    .map(|(s, &n)| s.iter().map(|v| v / n.max(1) as f64).collect())
                    .collect();
                let inertia: f64 = table
                    .rows
                    .iter()
                    .zip(&ids)
                    .map(|(r, &c)| sq_dist(r, &centroids[c as usize]))
                    .sum();
                metrics.insert("inertia".into(), inertia);
                metrics.insert("clusters".into(), k as f64);
                Fitted::Kmeans(m)
            }
            Algorithm::Pca => {
                let components = 2.min(n_features);
                let mx = matrix(&table.rows)?;
                let m = PCA::fit(&mx, PCAParameters::default().with_n_components(components))
                    .map_err(fail)?;
                output_width = components;
                metrics.insert("components".into(), components as f64);
                Fitted::Pca(m)
            }
        };
        let classes = match algorithm.task() {
            Task::TabularClassification => table.class_names.clone(),
            _ => Vec::new(),
        };
        let file = ModelFile {
            format: FORMAT.into(),
            version: VERSION,
            algorithm,
            dataset: table.name.to_string(),
            n_features,
            feature_names: table.feature_names.clone(),
            classes,
            output_width,
            metrics,
            fitted,
        };
        Ok(ClassicalModel::from_file(file))
    }

    fn from_file(file: ModelFile) -> ClassicalModel {
        ClassicalModel {
            info: ModelInfo {
                engine: "classical",
                task: file.algorithm.task(),
                algorithm: file.algorithm.name().to_string(),
                dataset: file.dataset.clone(),
                n_features: file.n_features,
                feature_names: file.feature_names.clone(),
                classes: file.classes.clone(),
                output_width: file.output_width,
                metrics: file.metrics.clone(),
            },
            file,
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), EngineError> {
        let text = serde_json::to_vec(&self.file)
            .map_err(|e| EngineError::Format(path.display().to_string(), e.to_string()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| EngineError::Read(dir.display().to_string(), e.to_string()))?;
        }
        std::fs::write(path, text)
            .map_err(|e| EngineError::Read(path.display().to_string(), e.to_string()))
    }

    pub fn load(path: &Path) -> Result<ClassicalModel, EngineError> {
        let name = path.display().to_string();
        let bytes =
            std::fs::read(path).map_err(|e| EngineError::Read(name.clone(), e.to_string()))?;
        let file: ModelFile = serde_json::from_slice(&bytes).map_err(|e| {
            EngineError::Format(
                name.clone(),
                format!("{e}; train one with `virga models train`"),
            )
        })?;
        if file.format != FORMAT || file.version != VERSION {
            return Err(EngineError::Format(
                name,
                format!(
                    "format {} version {} (want {FORMAT} {VERSION})",
                    file.format, file.version
                ),
            ));
        }
        Ok(ClassicalModel::from_file(file))
    }
}

impl Model for ClassicalModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn predict(&self, rows: &[Vec<f64>]) -> Result<Vec<Value>, EngineError> {
        let x = matrix(rows)?;
        let label = |ids: Vec<i64>| -> Vec<Value> {
            ids.into_iter()
                .map(|i| match self.info.classes.get(i as usize) {
                    Some(name) => Value::String(name.clone()),
                    None => Value::from(i),
                })
                .collect()
        };
        Ok(match &self.file.fitted {
            Fitted::Logistic(m) => label(m.predict(&x).map_err(fail)?),
            Fitted::RandomForest(m) => label(m.predict(&x).map_err(fail)?),
            Fitted::Kmeans(m) => m
                .predict(&x)
                .map_err(fail)?
                .into_iter()
                .map(Value::from)
                .collect(),
            Fitted::Pca(m) => {
                let t = m.transform(&x).map_err(fail)?;
                let (n, k) = t.shape();
                (0..n)
                    .map(|r| Value::from((0..k).map(|c| *t.get((r, c))).collect::<Vec<f64>>()))
                    .collect()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets;

    #[test]
    fn classifiers_learn_iris_and_reload_to_identical_predictions() {
        let iris = datasets::load("iris").unwrap();
        let dir = tempfile::tempdir().unwrap();
        for alg in [Algorithm::Logistic, Algorithm::RandomForest] {
            let m = ClassicalModel::train(alg, &iris).unwrap();
            let acc = m.info().metrics["accuracy"];
            assert!(acc >= 0.85, "{alg:?} accuracy {acc}");
            let path = dir.path().join(format!("iris-{}.model", alg.name()));
            m.save(&path).unwrap();
            let back = ClassicalModel::load(&path).unwrap();
            let before = m.predict(&iris.rows).unwrap();
            assert_eq!(back.predict(&iris.rows).unwrap(), before);
            assert!(
                before.iter().all(|p| p.is_string()),
                "labels are class names"
            );
        }
    }

    #[test]
    fn kmeans_and_pca_give_sane_outputs() {
        let iris = datasets::load("iris").unwrap();
        let k = ClassicalModel::train(Algorithm::Kmeans, &iris).unwrap();
        let inertia = k.info().metrics["inertia"];
        // Iris with 3 clusters: about 79 for a good k-means; far less than one cluster (~680).
        assert!(inertia > 0.0 && inertia < 150.0, "inertia {inertia}");
        let ids = k.predict(&iris.rows[..5]).unwrap();
        assert!(ids
            .iter()
            .all(|v| v.as_i64().is_some_and(|i| (0..3).contains(&i))));
        let p = ClassicalModel::train(Algorithm::Pca, &iris).unwrap();
        let rows = p.predict(&iris.rows[..3]).unwrap();
        assert_eq!(rows[0].as_array().unwrap().len(), 2);
    }

    #[test]
    fn unknown_files_and_algorithms_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.model");
        std::fs::write(&path, b"{}").unwrap();
        assert!(matches!(
            ClassicalModel::load(&path),
            Err(EngineError::Format(..))
        ));
        assert!(Algorithm::parse("svm")
            .unwrap_err()
            .to_string()
            .contains("not available yet"));
        assert!(crate::check_rows(&[vec![1.0]], 4, 10)
            .unwrap_err()
            .to_string()
            .contains("takes 4"));
        assert!(crate::check_rows(&[], 4, 10).is_err());
        assert!(crate::check_rows(&vec![vec![0.0; 4]; 11], 4, 10)
            .unwrap_err()
            .to_string()
            .contains("max_batch"));
    }
}
