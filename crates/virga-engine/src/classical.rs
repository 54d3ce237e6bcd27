//! Classical ML: training on the [`datasets`](crate::datasets) and a
//! documented file format.
//!
//! Algorithms: random forest, k-means and PCA (smartcore); logistic
//! regression (linfa-logistic), a multi-class SVM (linfa-svm) and a Gaussian
//! mixture (linfa-clustering).
//!
//! A `.model` file is JSON:
//! `{"format": "virga-classical", "version": 1, "algorithm": "logistic",
//!   "dataset": "iris", "n_features": 4, "feature_names": [...],
//!   "classes": [...], "output_width": 1, "metrics": {"accuracy": 0.97},
//!   "fitted": {"kind": "multinomial-logistic", "model": {...}}}`
//! where `fitted.kind` names the fitted model and `fitted.model` is that
//! model, serialised by serde:
//! - `multinomial-logistic` (algorithm `logistic`): linfa-logistic's
//!   `MultiFittedLogisticRegression<f64, i64>`;
//! - `random-forest`, `kmeans`, `pca`: the smartcore model; `logistic`:
//!   smartcore's logistic regression, in files of earlier versions (still
//!   loaded; new ones are `multinomial-logistic`);
//! - `gmm`: linfa-clustering's `GaussianMixtureModel<f64>` (weights, means,
//!   covariances and precisions of each component, as ndarray arrays);
//! - `svm`: `{"scaler": {"mean": [...], "scale": [...]}, "machines":
//!   [{"positive": a, "negative": b, "svm": {...}}, ...]}`: features are
//!   standardised (`(x - mean) / scale`), then one linfa-svm binary machine
//!   per pair of classes (one-vs-one, Gaussian kernel) votes for `positive`
//!   when its decision value is >= 0, else for `negative`; the class with
//!   most votes wins (ties: the larger summed decision value in its favour,
//!   then the lower class id).
//!
//! Classifiers report held-out `accuracy` and `test_rows` (the dataset's own
//! test split, else a seeded 20 % of its rows); k-means `inertia` and
//! `clusters`; the Gaussian mixture `clusters`, `log_likelihood` (mean per
//! row) and `purity` (the share of rows whose component's most common class
//! is their own); PCA `components`.

use std::collections::BTreeMap;
use std::path::Path;

use linfa::prelude::{Fit, Predict};
use linfa::DatasetBase;
use linfa_clustering::GaussianMixtureModel;
use linfa_logistic::{MultiFittedLogisticRegression, MultiLogisticRegression};
use linfa_svm::Svm;
use ndarray::{Array1, Array2, ArrayView1};
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

use crate::datasets::{Split, Table};
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
    Svm,
    Gmm,
}

impl Algorithm {
    pub const NAMES: &'static [&'static str] =
        &["logistic", "random-forest", "kmeans", "pca", "svm", "gmm"];

    pub fn parse(s: &str) -> Result<Algorithm, EngineError> {
        Ok(match s {
            "logistic" => Algorithm::Logistic,
            "random-forest" => Algorithm::RandomForest,
            "kmeans" => Algorithm::Kmeans,
            "pca" => Algorithm::Pca,
            "svm" => Algorithm::Svm,
            "gmm" => Algorithm::Gmm,
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
            Algorithm::Svm => "svm",
            Algorithm::Gmm => "gmm",
        }
    }

    fn task(self) -> Task {
        match self {
            Algorithm::Logistic | Algorithm::RandomForest | Algorithm::Svm => {
                Task::TabularClassification
            }
            Algorithm::Kmeans | Algorithm::Gmm => Task::Clustering,
            Algorithm::Pca => Task::Decomposition,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", content = "model", rename_all = "kebab-case")]
enum Fitted {
    /// Files of earlier versions (new ones are `MultinomialLogistic`).
    Logistic(LogisticRegression<f64, i64, X, Y>),
    MultinomialLogistic(MultiFittedLogisticRegression<f64, i64>),
    RandomForest(RandomForestClassifier<f64, i64, X, Y>),
    Kmeans(KMeans<f64, i64, X, Y>),
    Pca(PCA<f64, X>),
    Svm(SvmModel),
    Gmm(GaussianMixtureModel<f64>),
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

fn fail(e: impl Into<crate::BoxError>) -> EngineError {
    EngineError::inference(e)
}

/// The dataset's own train/test split, else a seeded 80/20 split (a
/// Fisher-Yates shuffle driven by an LCG).
fn split(t: &Table) -> (Vec<Vec<f64>>, Y, Vec<Vec<f64>>, Y) {
    if let Some(Split { rows, labels }) = &t.test {
        return (
            t.rows.clone(),
            t.labels.clone(),
            rows.clone(),
            labels.clone(),
        );
    }
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

/// Rows as an ndarray matrix (linfa's input), each `width` values long.
fn array(rows: &[Vec<f64>], width: usize) -> Result<Array2<f64>, EngineError> {
    if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != width) {
        return Err(EngineError::Input(format!(
            "row {i} has {} values; the model takes {width}",
            r.len()
        )));
    }
    Ok(Array2::from_shape_fn((rows.len(), width), |(i, j)| {
        rows[i][j]
    }))
}

/// Standardisation, per feature: `(x - mean) / scale`.
#[derive(Debug, Serialize, Deserialize)]
struct Scaler {
    mean: Vec<f64>,
    /// The standard deviation; 1 for a constant feature.
    scale: Vec<f64>,
}

impl Scaler {
    fn fit(rows: &[Vec<f64>], width: usize) -> Scaler {
        let n = rows.len().max(1) as f64;
        let mut mean = vec![0.0; width];
        for r in rows {
            for (m, v) in mean.iter_mut().zip(r) {
                *m += v / n;
            }
        }
        let mut var = vec![0.0; width];
        for r in rows {
            for ((s, v), m) in var.iter_mut().zip(r).zip(&mean) {
                *s += (v - m) * (v - m) / n;
            }
        }
        let scale = var
            .into_iter()
            .map(|v| if v > 1e-24 { v.sqrt() } else { 1.0 })
            .collect();
        Scaler { mean, scale }
    }

    fn apply(&self, rows: &[Vec<f64>]) -> Result<Array2<f64>, EngineError> {
        let mut x = array(rows, self.mean.len())?;
        for mut row in x.rows_mut() {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.scale) {
                *v = (*v - m) / s;
            }
        }
        Ok(x)
    }
}

/// L2 regularisation of logistic regression (C = 1 / alpha = 1, as in
/// scikit-learn).
const LOGISTIC_ALPHA: f64 = 1.0;

/// Regularisation of the SVM (C, as in libsvm and scikit-learn's default).
const SVM_C: f64 = 1.0;

/// A multi-class SVM: one linfa-svm binary machine (Gaussian kernel) per
/// pair of classes, on standardised features, voting (one-vs-one, as libsvm).
#[derive(Debug, Serialize, Deserialize)]
struct SvmModel {
    scaler: Scaler,
    machines: Vec<PairMachine>,
}

/// The machine separating class `positive` (decision >= 0) from `negative`.
#[derive(Debug, Serialize, Deserialize)]
struct PairMachine {
    positive: i64,
    negative: i64,
    svm: Svm<f64, bool>,
}

impl SvmModel {
    fn fit(rows: &[Vec<f64>], labels: &[i64], width: usize) -> Result<SvmModel, EngineError> {
        let scaler = Scaler::fit(rows, width);
        let x = scaler.apply(rows)?;
        let mut classes = labels.to_vec();
        classes.sort_unstable();
        classes.dedup();
        if classes.len() < 2 {
            return Err(EngineError::Input(
                "an SVM needs rows of at least two classes".into(),
            ));
        }
        // The kernel is exp(-|x - y|^2 / eps); eps = the number of
        // (standardised) features is scikit-learn's gamma = "scale".
        let eps = width.max(1) as f64;
        let mut machines = Vec::new();
        for (i, &positive) in classes.iter().enumerate() {
            for &negative in &classes[i + 1..] {
                let idx: Vec<usize> = (0..labels.len())
                    .filter(|&r| labels[r] == positive || labels[r] == negative)
                    .collect();
                let records = x.select(ndarray::Axis(0), &idx);
                let targets: Array1<bool> = idx.iter().map(|&r| labels[r] == positive).collect();
                let svm = Svm::<f64, bool>::params()
                    .pos_neg_weights(SVM_C, SVM_C)
                    .gaussian_kernel(eps)
                    .fit(&DatasetBase::new(records, targets))
                    .map_err(fail)?;
                machines.push(PairMachine {
                    positive,
                    negative,
                    svm,
                });
            }
        }
        Ok(SvmModel { scaler, machines })
    }

    fn predict(&self, rows: &[Vec<f64>]) -> Result<Y, EngineError> {
        let x = self.scaler.apply(rows)?;
        Ok(x.rows().into_iter().map(|row| self.vote(row)).collect())
    }

    /// Most votes, then the larger summed decision value, then the lower id.
    fn vote(&self, row: ArrayView1<f64>) -> i64 {
        let mut tally: BTreeMap<i64, (usize, f64)> = BTreeMap::new();
        for m in &self.machines {
            let d = m.svm.weighted_sum(&row) - m.svm.rho;
            let winner = if d >= 0.0 { m.positive } else { m.negative };
            tally.entry(m.positive).or_default().1 += d;
            tally.entry(m.negative).or_default().1 -= d;
            tally.entry(winner).or_default().0 += 1;
        }
        tally
            .into_iter()
            .max_by(|(a, (va, sa)), (b, (vb, sb))| va.cmp(vb).then(sa.total_cmp(sb)).then(b.cmp(a)))
            .map_or(0, |(class, _)| class)
    }
}

/// Gaussian mixtures fit a full covariance matrix per component: more
/// features than this (fashion-mnist's 784) would be slow and degenerate.
const GMM_MAX_FEATURES: usize = 64;

/// Mean log-likelihood of the rows under the mixture.
fn gmm_log_likelihood(m: &GaussianMixtureModel<f64>, x: &Array2<f64>) -> f64 {
    let d = x.ncols() as f64;
    let consts: Vec<f64> = (0..m.weights().len())
        .map(|k| {
            let cov = m.covariances().index_axis(ndarray::Axis(0), k);
            m.weights()[k].ln() - 0.5 * (d * (2.0 * std::f64::consts::PI).ln() + log_det(cov))
        })
        .collect();
    let total: f64 = x
        .rows()
        .into_iter()
        .map(|row| {
            let terms: Vec<f64> = consts
                .iter()
                .enumerate()
                .map(|(k, c)| {
                    let diff = &row - &m.means().row(k);
                    let p = m.precisions().index_axis(ndarray::Axis(0), k);
                    c - 0.5 * diff.dot(&p.dot(&diff))
                })
                .collect();
            let top = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            top + terms.iter().map(|t| (t - top).exp()).sum::<f64>().ln()
        })
        .sum();
    total / x.nrows().max(1) as f64
}

/// log |a| of a symmetric positive-definite matrix (Cholesky).
fn log_det(a: ndarray::ArrayView2<f64>) -> f64 {
    let n = a.nrows();
    let mut l = Array2::<f64>::zeros((n, n));
    let mut sum = 0.0;
    for j in 0..n {
        let d = (a[[j, j]] - (0..j).map(|k| l[[j, k]] * l[[j, k]]).sum::<f64>()).sqrt();
        l[[j, j]] = d;
        sum += d.ln();
        for i in j + 1..n {
            l[[i, j]] = (a[[i, j]] - (0..j).map(|k| l[[i, k]] * l[[j, k]]).sum::<f64>()) / d;
        }
    }
    2.0 * sum
}

/// The share of rows whose cluster's most common label is their own.
fn purity(ids: &[usize], labels: &[i64]) -> f64 {
    let mut counts: BTreeMap<(usize, i64), usize> = BTreeMap::new();
    for (&c, &l) in ids.iter().zip(labels) {
        *counts.entry((c, l)).or_default() += 1;
    }
    let mut best: BTreeMap<usize, usize> = BTreeMap::new();
    for ((c, _), n) in counts {
        let b = best.entry(c).or_default();
        *b = (*b).max(n);
    }
    best.values().sum::<usize>() as f64 / labels.len().max(1) as f64
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
            Algorithm::Svm => {
                let (xtr, ytr, xte, yte) = split(table);
                let m = SvmModel::fit(&xtr, &ytr, n_features)?;
                let pred = m.predict(&xte)?;
                metrics.insert("accuracy".into(), accuracy(&pred, &yte));
                metrics.insert("test_rows".into(), yte.len() as f64);
                Fitted::Svm(m)
            }
            Algorithm::Gmm => {
                if n_features > GMM_MAX_FEATURES {
                    return Err(EngineError::Input(format!(
                        "gmm fits a full covariance matrix per component: {} has {n_features} features, \
                         more than {GMM_MAX_FEATURES}; cluster it with kmeans",
                        table.name
                    )));
                }
                let k = table.class_names.len().max(2);
                let x = array(&table.rows, n_features)?;
                let m = GaussianMixtureModel::params(k)
                    .fit(&DatasetBase::from(x.clone()))
                    .map_err(fail)?;
                let ids: Array1<usize> = m.predict(&x);
                metrics.insert("clusters".into(), k as f64);
                metrics.insert("log_likelihood".into(), gmm_log_likelihood(&m, &x));
                metrics.insert("purity".into(), purity(&ids.to_vec(), &table.labels));
                Fitted::Gmm(m)
            }
            Algorithm::Logistic | Algorithm::RandomForest => {
                let (xtr, ytr, xte, yte) = split(table);
                let (fitted, pred) = if algorithm == Algorithm::Logistic {
                    // linfa-logistic (L-BFGS over ndarray products, at most
                    // 100 iterations): smartcore's runs up to 1000 iterations
                    // of scalar loops, minutes on fashion-mnist's 784 features.
                    let x = array(&xtr, n_features)?;
                    let m = MultiLogisticRegression::default()
                        .alpha(LOGISTIC_ALPHA)
                        .max_iterations(100)
                        .fit(&DatasetBase::new(x, Array1::from(ytr)))
                        .map_err(fail)?;
                    let p: Array1<i64> = m.predict(&array(&xte, n_features)?);
                    (Fitted::MultinomialLogistic(m), p.to_vec())
                } else {
                    let (mx, mt) = (matrix(&xtr)?, matrix(&xte)?);
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
            .map_err(|e| EngineError::format(path.display().to_string(), e))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| EngineError::read(dir.display().to_string(), e))?;
        }
        std::fs::write(path, text).map_err(|e| EngineError::read(path.display().to_string(), e))
    }

    pub fn load(path: &Path) -> Result<ClassicalModel, EngineError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| EngineError::read(name.clone(), e))?;
        let file: ModelFile = serde_json::from_slice(&bytes).map_err(|e| {
            EngineError::format(
                name.clone(),
                format!("{e}; train one with `virga models train`"),
            )
        })?;
        if file.format != FORMAT || file.version != VERSION {
            return Err(EngineError::format(
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
        let x = || matrix(rows);
        let label = |ids: Vec<i64>| -> Vec<Value> {
            ids.into_iter()
                .map(|i| match self.info.classes.get(i as usize) {
                    Some(name) => Value::String(name.clone()),
                    None => Value::from(i),
                })
                .collect()
        };
        Ok(match &self.file.fitted {
            Fitted::Logistic(m) => label(m.predict(&x()?).map_err(fail)?),
            Fitted::MultinomialLogistic(m) => {
                let ids: Array1<i64> = m.predict(&array(rows, m.params().nrows())?);
                label(ids.to_vec())
            }
            Fitted::RandomForest(m) => label(m.predict(&x()?).map_err(fail)?),
            Fitted::Svm(m) => label(m.predict(rows)?),
            Fitted::Kmeans(m) => m
                .predict(&x()?)
                .map_err(fail)?
                .into_iter()
                .map(Value::from)
                .collect(),
            Fitted::Gmm(m) => {
                let ids: Array1<usize> = m.predict(&array(rows, m.means().ncols())?);
                ids.into_iter().map(|i| Value::from(i as i64)).collect()
            }
            Fitted::Pca(m) => {
                let t = m.transform(&x()?).map_err(fail)?;
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
    fn svm_learns_iris_and_reloads_to_identical_predictions() {
        let iris = datasets::load("iris").unwrap();
        let m = ClassicalModel::train(Algorithm::Svm, &iris).unwrap();
        let acc = m.info().metrics["accuracy"];
        assert!(acc >= 0.9, "svm test accuracy {acc}");
        assert_eq!(m.info().task, Task::TabularClassification);
        let Fitted::Svm(svm) = &m.file.fitted else {
            panic!("not an svm")
        };
        assert_eq!(svm.machines.len(), 3, "one machine per pair of classes");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("iris-svm.model");
        m.save(&path).unwrap();
        let back = ClassicalModel::load(&path).unwrap();
        let before = m.predict(&iris.rows).unwrap();
        assert_eq!(back.predict(&iris.rows).unwrap(), before);
        let train_hits = before
            .iter()
            .zip(&iris.labels)
            .filter(|(p, &l)| p.as_str() == Some(iris.class_names[l as usize].as_str()))
            .count();
        assert!(train_hits >= 140, "{train_hits}/150 right on iris");
        assert!(
            m.predict(&[vec![1.0; 3]]).is_err(),
            "rows of the wrong width"
        );
    }

    #[test]
    fn gmm_finds_the_iris_species_and_reloads_to_identical_predictions() {
        let iris = datasets::load("iris").unwrap();
        let m = ClassicalModel::train(Algorithm::Gmm, &iris).unwrap();
        assert_eq!(m.info().task, Task::Clustering);
        let metrics = &m.info().metrics;
        // Full-covariance mixtures separate the species better than k-means (~0.89).
        assert!(metrics["purity"] >= 0.9, "purity {}", metrics["purity"]);
        // One Gaussian over all of iris scores about -3.4 per row; three, about -1.2.
        let ll = metrics["log_likelihood"];
        assert!(ll > -2.0 && ll < 0.0, "log-likelihood {ll}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("iris-gmm.model");
        m.save(&path).unwrap();
        let back = ClassicalModel::load(&path).unwrap();
        let ids = m.predict(&iris.rows).unwrap();
        assert_eq!(back.predict(&iris.rows).unwrap(), ids);
        let ids: Vec<i64> = ids.iter().map(|v| v.as_i64().unwrap()).collect();
        assert!(ids.iter().all(|i| (0..3).contains(i)));
        assert_ne!(
            ids[0], ids[149],
            "setosa and virginica in different components"
        );
    }

    #[test]
    fn gmm_refuses_many_features() {
        let wide = Table {
            name: "wide",
            rows: vec![vec![0.0; GMM_MAX_FEATURES + 1]; 4],
            labels: vec![0, 1, 0, 1],
            class_names: vec!["a".into(), "b".into()],
            feature_names: Vec::new(),
            test: None,
        };
        let err = ClassicalModel::train(Algorithm::Gmm, &wide)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("kmeans"), "{err}");
    }

    /// Fashion-MNIST is a system package: the test runs where its files are
    /// and is skipped elsewhere, unless VIRGA_REQUIRE_DATASETS=1 (CI).
    #[test]
    fn fashion_mnist_trains_when_installed() {
        let dir = datasets::fashion_mnist_dir();
        if !datasets::fashion_mnist_present(&dir) {
            assert!(
                std::env::var("VIRGA_REQUIRE_DATASETS").as_deref() != Ok("1"),
                "VIRGA_REQUIRE_DATASETS=1 but Fashion-MNIST is not in {}: \
                 apt-get install dataset-fashion-mnist or set VIRGA_FASHION_MNIST_DIR",
                dir.display()
            );
            eprintln!(
                "skipped: Fashion-MNIST is not in {} (apt-get install dataset-fashion-mnist)",
                dir.display()
            );
            return;
        }
        // A small subset: this crate's own code is unoptimised in tests.
        let t = datasets::load_fashion_mnist(&dir, 1000, 300).unwrap();
        assert_eq!((t.rows.len(), t.rows[0].len()), (1000, 784));
        assert!(t.rows.iter().flatten().all(|p| (0.0..=1.0).contains(p)));
        let m = ClassicalModel::train(Algorithm::Logistic, &t).unwrap();
        let acc = m.info().metrics["accuracy"];
        assert_eq!(m.info().metrics["test_rows"], 300.0);
        // Ten classes: chance is 0.1; linear models reach ~0.8 on this subset.
        assert!(acc >= 0.7, "logistic accuracy {acc} on fashion-mnist");
        let p = m.predict(&t.test.as_ref().unwrap().rows[..2]).unwrap();
        assert!(p
            .iter()
            .all(|v| datasets::FASHION_MNIST_CLASSES.contains(&v.as_str().unwrap())));
    }

    #[test]
    fn unknown_files_and_algorithms_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.model");
        std::fs::write(&path, b"{}").unwrap();
        assert!(matches!(
            ClassicalModel::load(&path),
            Err(EngineError::Format { .. })
        ));
        assert!(Algorithm::parse("svc")
            .unwrap_err()
            .to_string()
            .contains("use one of logistic, random-forest, kmeans, pca, svm, gmm"));
        for name in Algorithm::NAMES {
            assert_eq!(Algorithm::parse(name).unwrap().name(), *name);
        }
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
