//! Request bodies built from their description in a preset: seeded, so every
//! run sends the same bytes.

use std::path::Path;

use base64::Engine as _;
use rand::{Rng, SeedableRng};

use crate::preset::PayloadSpec;
use crate::LabError;

const SEED: u64 = 2024;

/// Builds the body; `rows` overrides the row count of a `rows` payload (a
/// sweep's batch size).
pub fn build(spec: &PayloadSpec, dir: &Path, rows: Option<u32>) -> Result<Vec<u8>, LabError> {
    Ok(match spec {
        PayloadSpec::Json { value } => value.as_bytes().to_vec(),
        PayloadSpec::Image { bytes, top_k } => {
            let png = noise_png(*bytes)?;
            serde_json::to_vec(&serde_json::json!({
                "image": base64::engine::general_purpose::STANDARD.encode(png),
                "top_k": top_k,
            }))
            .expect("JSON of strings and numbers")
        }
        PayloadSpec::Rows {
            rows: n,
            features,
            lo,
            hi,
        } => {
            let n = rows.map_or(*n, |r| r as usize);
            let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);
            let instances: Vec<Vec<f64>> = (0..n)
                .map(|_| {
                    (0..*features)
                        .map(|_| {
                            // Two decimals keep bodies short and readable.
                            let v = lo + (hi - lo) * rng.random::<f64>();
                            (v * 100.0).round() / 100.0
                        })
                        .collect()
                })
                .collect();
            serde_json::to_vec(&serde_json::json!({ "instances": instances }))
                .expect("JSON of numbers")
        }
        PayloadSpec::Texts { texts } => {
            serde_json::to_vec(&serde_json::json!({ "inputs": texts })).expect("JSON of strings")
        }
        PayloadSpec::File { path } => {
            let p = dir.join(path);
            std::fs::read(&p).map_err(|e| LabError::Io(p.display().to_string(), e))?
        }
    })
}

/// A PNG of seeded RGB noise of about `bytes` bytes: noise does not
/// compress, so width x height x 3 is close to the file size.
/// The object a bucket-triggered scenario uploads for `spec`: the image
/// itself for an image payload, else the request body.
pub fn object(spec: &PayloadSpec, dir: &Path) -> Result<Vec<u8>, LabError> {
    match spec {
        PayloadSpec::Image { bytes, .. } => noise_png(*bytes),
        other => build(other, dir, None),
    }
}

pub fn noise_png(bytes: usize) -> Result<Vec<u8>, LabError> {
    let side = ((bytes as f64 / 3.0).sqrt().round() as u32).max(8);
    let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);
    let mut img = image::RgbImage::new(side, side);
    for p in img.pixels_mut() {
        *p = image::Rgb([rng.random(), rng.random(), rng.random()]);
    }
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| LabError::Config(format!("cannot encode a PNG: {e}")))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_have_about_the_size_asked() {
        for want in [50_000usize, 500_000] {
            let got = noise_png(want).unwrap().len();
            let ratio = got as f64 / want as f64;
            assert!((0.95..1.10).contains(&ratio), "{want} -> {got}");
        }
        let body = build(
            &PayloadSpec::Image {
                bytes: 2000,
                top_k: 3,
            },
            Path::new("."),
            None,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["top_k"], 3);
        assert!(v["image"].as_str().unwrap().len() > 2000);
    }

    #[test]
    fn rows_are_seeded_and_sized() {
        let spec = PayloadSpec::Rows {
            rows: 4,
            features: 3,
            lo: 0.0,
            hi: 1.0,
        };
        let a = build(&spec, Path::new("."), None).unwrap();
        assert_eq!(a, build(&spec, Path::new("."), None).unwrap());
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["instances"].as_array().unwrap().len(), 4);
        assert_eq!(v["instances"][0].as_array().unwrap().len(), 3);
        let b = build(&spec, Path::new("."), Some(100)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["instances"].as_array().unwrap().len(), 100);
    }
}
