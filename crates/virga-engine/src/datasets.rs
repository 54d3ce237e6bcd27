//! Datasets: bundled in crates (`linfa-datasets`: iris, winequality) or read
//! from files a system package installs (fashion-mnist), as plain rows.
//!
//! Fashion-MNIST comes from the Debian package `dataset-fashion-mnist`, which
//! puts the four gzipped IDX files (`train-images-idx3-ubyte.gz`,
//! `train-labels-idx1-ubyte.gz`, `t10k-images-idx3-ubyte.gz`,
//! `t10k-labels-idx1-ubyte.gz`) in [`FASHION_MNIST_DIR`]; the environment
//! variable `VIRGA_FASHION_MNIST_DIR` points elsewhere (plain, not gzipped,
//! files are read too). Each 28x28 image becomes a row of 784 features
//! (pixel / 255). Training uses a deterministic subset: the first
//! [`FASHION_MNIST_TRAIN_ROWS`] rows of the training set (the environment
//! variable `VIRGA_FASHION_MNIST_ROWS` changes it; 60000 is all of it), and
//! models are evaluated on the first [`FASHION_MNIST_TEST_ROWS`] rows of the
//! test set.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::EngineError;

/// A labelled table.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: &'static str,
    pub rows: Vec<Vec<f64>>,
    /// Class id per row.
    pub labels: Vec<i64>,
    pub class_names: Vec<String>,
    pub feature_names: Vec<String>,
    /// The dataset's own test split, when it has one (fashion-mnist); when
    /// `None`, training holds out a seeded 20 % of `rows`.
    pub test: Option<Split>,
}

/// Rows and their class ids.
#[derive(Debug, Clone, Default)]
pub struct Split {
    pub rows: Vec<Vec<f64>>,
    pub labels: Vec<i64>,
}

pub const NAMES: &[&str] = &["iris", "winequality", "fashion-mnist"];

/// Where the Debian package `dataset-fashion-mnist` installs the dataset.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Training rows used by default (the first ones of the 60000).
pub const FASHION_MNIST_TRAIN_ROWS: usize = 5000;
/// Test rows models are evaluated on (the first ones of the 10000).
pub const FASHION_MNIST_TEST_ROWS: usize = 2000;
/// Fashion-MNIST's labels, in the order of their ids.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Rows, class ids and feature names of a linfa dataset (no type names: the
/// dataset type lives in `linfa`, and this keeps the loader independent of it).
macro_rules! table_parts {
    ($ds:expr) => {{
        let ds = $ds;
        let rows: Vec<Vec<f64>> = ds.records.outer_iter().map(|r| r.to_vec()).collect();
        let labels: Vec<i64> = ds.targets.iter().map(|&t| t as i64).collect();
        (rows, labels, ds.feature_names().to_vec())
    }};
}

/// [`load`], keeping at most `rows` rows: fashion-mnist loads that many
/// training images (its test split is its own); the others keep their
/// first `rows` rows, of which training holds out 20 % as usual.
pub fn load_rows(name: &str, rows: Option<usize>) -> Result<Table, EngineError> {
    let Some(n) = rows else { return load(name) };
    if n == 0 {
        return Err(EngineError::Input("rows must be at least 1".into()));
    }
    if name == "fashion-mnist" {
        return load_fashion_mnist(&fashion_mnist_dir(), n, FASHION_MNIST_TEST_ROWS);
    }
    let mut t = load(name)?;
    t.rows.truncate(n);
    t.labels.truncate(n);
    Ok(t)
}

pub fn load(name: &str) -> Result<Table, EngineError> {
    let (name, (rows, labels, feature_names), class_names) = match name {
        "iris" => (
            "iris",
            table_parts!(linfa_datasets::iris()),
            ["setosa", "versicolor", "virginica"]
                .map(String::from)
                .to_vec(),
        ),
        "winequality" => {
            let parts = table_parts!(linfa_datasets::winequality());
            let max = parts.1.iter().copied().max().unwrap_or(0);
            (
                "winequality",
                parts,
                (0..=max).map(|q| q.to_string()).collect(),
            )
        }
        "fashion-mnist" => {
            let rows = match std::env::var("VIRGA_FASHION_MNIST_ROWS") {
                Ok(v) => v
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| {
                        EngineError::Input(format!(
                        "VIRGA_FASHION_MNIST_ROWS={v:?}: want a positive number of training rows"
                    ))
                    })?,
                Err(_) => FASHION_MNIST_TRAIN_ROWS,
            };
            return load_fashion_mnist(&fashion_mnist_dir(), rows, FASHION_MNIST_TEST_ROWS);
        }
        other => {
            return Err(EngineError::Unknown(format!(
                "unknown dataset {other:?}: use one of {}",
                NAMES.join(", ")
            )))
        }
    };
    Ok(Table {
        name,
        rows,
        labels,
        class_names,
        feature_names,
        test: None,
    })
}

/// `VIRGA_FASHION_MNIST_DIR`, else [`FASHION_MNIST_DIR`].
pub fn fashion_mnist_dir() -> PathBuf {
    std::env::var_os("VIRGA_FASHION_MNIST_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(FASHION_MNIST_DIR))
}

/// Whether `dir` holds the four Fashion-MNIST files (gzipped or not).
pub fn fashion_mnist_present(dir: &Path) -> bool {
    FASHION_MNIST_FILES
        .iter()
        .all(|f| idx_file(dir, f).is_some())
}

const FASHION_MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// `dir/<stem>.gz`, else `dir/<stem>`, if either exists.
fn idx_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()]
        .into_iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// Fashion-MNIST from the IDX files in `dir`: the first `train_rows` rows of
/// the training set as the table's rows, the first `test_rows` of the test
/// set as its test split (fewer when the files hold fewer).
pub fn load_fashion_mnist(
    dir: &Path,
    train_rows: usize,
    test_rows: usize,
) -> Result<Table, EngineError> {
    let path = |stem: &str| {
        idx_file(dir, stem).ok_or_else(|| {
            EngineError::Unknown(format!(
                "dataset fashion-mnist: no {}: install it with `apt-get install dataset-fashion-mnist`, \
                 or set VIRGA_FASHION_MNIST_DIR to a directory holding its IDX files",
                dir.join(format!("{stem}.gz")).display()
            ))
        })
    };
    let train = read_images(
        &path(FASHION_MNIST_FILES[0])?,
        &path(FASHION_MNIST_FILES[1])?,
        train_rows,
    )?;
    let test = read_images(
        &path(FASHION_MNIST_FILES[2])?,
        &path(FASHION_MNIST_FILES[3])?,
        test_rows,
    )?;
    let width = train.rows.first().map_or(0, Vec::len);
    Ok(Table {
        name: "fashion-mnist",
        rows: train.rows,
        labels: train.labels,
        class_names: FASHION_MNIST_CLASSES.map(String::from).to_vec(),
        feature_names: (0..width).map(|i| format!("pixel{i}")).collect(),
        test: Some(test),
    })
}

/// The first `limit` images (rows of pixel / 255) and their labels.
fn read_images(images: &Path, labels: &Path, limit: usize) -> Result<Split, EngineError> {
    let img = read_idx(images, Some(limit))?;
    let lab = read_idx(labels, Some(limit))?;
    let bad = |why: String| EngineError::Input(format!("{}: {why}", images.display()));
    if img.dims.len() < 2 || lab.dims.len() != 1 {
        return Err(bad(format!(
            "want images (n x rows x cols) and labels (n), found dimensions {:?} and {:?}",
            img.dims, lab.dims
        )));
    }
    let n = img.dims[0].min(lab.dims[0]);
    let width: usize = img.dims[1..].iter().product();
    if let Some(&l) = lab.data[..n]
        .iter()
        .find(|&&l| l as usize >= FASHION_MNIST_CLASSES.len())
    {
        return Err(bad(format!("label {l} is not one of the 10 classes")));
    }
    Ok(Split {
        rows: img.data[..n * width]
            .chunks_exact(width)
            .map(|px| px.iter().map(|&p| f64::from(p) / 255.0).collect())
            .collect(),
        labels: lab.data[..n].iter().map(|&l| i64::from(l)).collect(),
    })
}

/// An IDX array of unsigned bytes (the MNIST file format: a 4-byte magic
/// `0 0 0x08 ndims`, `ndims` big-endian u32 sizes, then the bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    /// Sizes, outermost first (`dims[0]` counts the items read).
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file, gzipped or not, keeping at most `max_items` items along
/// its first dimension (and reading no further than them).
pub fn read_idx(path: &Path, max_items: Option<usize>) -> Result<Idx, EngineError> {
    let name = path.display().to_string();
    let read_err = |e: std::io::Error| EngineError::Input(format!("cannot read {name}: {e}"));
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let mut head = [0u8; 2];
    let gz = file.read_exact(&mut head).is_ok() && head == [0x1f, 0x8b];
    drop(file);
    let file = std::fs::File::open(path).map_err(read_err)?;
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)))
    } else {
        Box::new(std::io::BufReader::new(file))
    };
    parse_idx(reader, max_items).map_err(|why| EngineError::Input(format!("{name}: {why}")))
}

fn parse_idx(mut r: impl Read, max_items: Option<usize>) -> Result<Idx, String> {
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)
        .map_err(|e| format!("no IDX header: {e}"))?;
    if magic[..2] != [0, 0] || magic[3] == 0 {
        return Err(format!("not an IDX file (magic {magic:02x?})"));
    }
    if magic[2] != 0x08 {
        return Err(format!(
            "IDX element type 0x{:02x}: only unsigned bytes (0x08) are read",
            magic[2]
        ));
    }
    let mut dims = Vec::with_capacity(magic[3] as usize);
    for _ in 0..magic[3] {
        let mut d = [0u8; 4];
        r.read_exact(&mut d)
            .map_err(|e| format!("truncated IDX header: {e}"))?;
        dims.push(u32::from_be_bytes(d) as usize);
    }
    if let Some(max) = max_items {
        dims[0] = dims[0].min(max);
    }
    let len = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("IDX sizes overflow")?;
    let mut data = vec![0u8; len];
    r.read_exact(&mut data)
        .map_err(|e| format!("IDX data shorter than its sizes {dims:?}: {e}"))?;
    Ok(Idx { dims, data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn bundled_datasets_load() {
        let iris = load("iris").unwrap();
        assert_eq!(iris.rows.len(), 150);
        assert_eq!(iris.rows[0].len(), 4);
        assert_eq!(iris.class_names.len(), 3);
        assert!(iris.test.is_none());
        let wine = load("winequality").unwrap();
        assert_eq!(wine.rows[0].len(), 11);
        assert!(wine.rows.len() > 1000);
        assert!(load("mnist").is_err());
    }

    /// An IDX file of `dims` with bytes 0, 1, 2, ... (wrapping), gzipped or not.
    fn write_idx(path: &Path, dims: &[u32], gz: bool) -> Vec<u8> {
        let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
        for d in dims {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        let n: u32 = dims.iter().product();
        let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        bytes.extend_from_slice(&data);
        let file = std::fs::File::create(path).unwrap();
        if gz {
            let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            enc.write_all(&bytes).unwrap();
            enc.finish().unwrap();
        } else {
            std::io::BufWriter::new(file).write_all(&bytes).unwrap();
        }
        data
    }

    #[test]
    fn idx_files_parse_gzipped_or_plain_and_stop_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("x-idx3-ubyte.gz");
        let data = write_idx(&gz, &[5, 2, 3], true);
        let all = read_idx(&gz, None).unwrap();
        assert_eq!(all.dims, vec![5, 2, 3]);
        assert_eq!(all.data, data);
        let two = read_idx(&gz, Some(2)).unwrap();
        assert_eq!(two.dims, vec![2, 2, 3]);
        assert_eq!(two.data, data[..12]);
        let plain = dir.path().join("y-idx1-ubyte");
        let labels = write_idx(&plain, &[4], false);
        assert_eq!(read_idx(&plain, Some(10)).unwrap().data, labels);

        // Not IDX, other element types and truncated data are explained.
        let bad = dir.path().join("bad");
        std::fs::write(&bad, b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd").unwrap();
        let err = read_idx(&bad, None).unwrap_err().to_string();
        assert!(err.contains("only unsigned bytes"), "{err}");
        std::fs::write(&bad, b"\x00\x00\x08\x01\x00\x00\x00\x09abc").unwrap();
        assert!(read_idx(&bad, None)
            .unwrap_err()
            .to_string()
            .contains("shorter"));
        std::fs::write(&bad, b"PK\x03\x04").unwrap();
        assert!(read_idx(&bad, None)
            .unwrap_err()
            .to_string()
            .contains("not an IDX"));
    }

    #[test]
    fn a_tiny_fashion_mnist_loads_as_pixels_and_class_names() {
        let dir = tempfile::tempdir().unwrap();
        write_idx(
            &dir.path().join("train-images-idx3-ubyte.gz"),
            &[6, 2, 2],
            true,
        );
        write_idx(
            &dir.path().join("t10k-images-idx3-ubyte.gz"),
            &[3, 2, 2],
            true,
        );
        // Labels 0..n (all below 10).
        write_idx(&dir.path().join("train-labels-idx1-ubyte.gz"), &[6], true);
        write_idx(&dir.path().join("t10k-labels-idx1-ubyte"), &[3], false);
        assert!(fashion_mnist_present(dir.path()));
        let t = load_fashion_mnist(dir.path(), 4, 100).unwrap();
        assert_eq!(t.rows.len(), 4);
        assert_eq!(
            t.rows[1],
            vec![4.0 / 255.0, 5.0 / 255.0, 6.0 / 255.0, 7.0 / 255.0]
        );
        assert_eq!(t.labels, vec![0, 1, 2, 3]);
        assert_eq!(t.feature_names.len(), 4);
        assert_eq!(t.class_names[9], "Ankle boot");
        let test = t.test.unwrap();
        assert_eq!((test.rows.len(), test.labels.len()), (3, 3));

        let empty = tempfile::tempdir().unwrap();
        assert!(!fashion_mnist_present(empty.path()));
        let err = load_fashion_mnist(empty.path(), 1, 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("apt-get install dataset-fashion-mnist")
                && err.contains("VIRGA_FASHION_MNIST_DIR"),
            "{err}"
        );
    }
}
