//! Image preprocessing, driven by a recipe kept in the model's sidecar (not
//! in code paths per model): decode (JPEG, PNG), resize the shorter side,
//! centre-crop, scale each channel as `(x - mean) / std`, lay out as NCHW.

use serde::Deserialize;

use crate::EngineError;

/// How a model expects its images.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The shorter side is resized to this many pixels first.
    pub resize_shorter: u32,
    /// Then a centred square of this side is cut out.
    pub crop: u32,
    /// Per-channel mean and standard deviation, in 0..255 units, RGB order.
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for Recipe {
    /// The ImageNet recipe of torchvision models.
    fn default() -> Self {
        Recipe {
            resize_shorter: 256,
            crop: 224,
            mean: [123.675, 116.28, 103.53],
            std: [58.395, 57.12, 57.375],
        }
    }
}

/// Largest encoded image accepted (the request limit bounds it anyway).
pub const MAX_IMAGE_BYTES: usize = 8 * 1024 * 1024;
/// Largest decoded image side, so a tiny file cannot claim a huge canvas.
const MAX_SIDE: u32 = 8192;

impl Recipe {
    /// Decodes `bytes` and returns a `[3, crop, crop]` tensor, channel-major.
    pub fn tensor(&self, bytes: &[u8]) -> Result<Vec<f32>, EngineError> {
        if bytes.len() > MAX_IMAGE_BYTES {
            return Err(EngineError::Input(format!(
                "the image is over {MAX_IMAGE_BYTES} bytes"
            )));
        }
        let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| EngineError::Input(format!("cannot read the image: {e}")))?;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(MAX_SIDE);
        limits.max_image_height = Some(MAX_SIDE);
        reader.limits(limits);
        let img = reader
            .decode()
            .map_err(|e| {
                EngineError::Input(format!(
                    "cannot decode the image (JPEG or PNG expected): {e}"
                ))
            })?
            .to_rgb8();
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Err(EngineError::Input("the image is empty".into()));
        }
        let scale = self.resize_shorter as f32 / w.min(h) as f32;
        let (nw, nh) = (
            ((w as f32 * scale).round() as u32).max(self.crop),
            ((h as f32 * scale).round() as u32).max(self.crop),
        );
        let resized = image::imageops::resize(&img, nw, nh, image::imageops::FilterType::Triangle);
        let (x0, y0) = ((nw - self.crop) / 2, (nh - self.crop) / 2);
        let c = self.crop as usize;
        let mut out = vec![0f32; 3 * c * c];
        for y in 0..c {
            for x in 0..c {
                let p = resized.get_pixel(x0 + x as u32, y0 + y as u32);
                for ch in 0..3 {
                    out[ch * c * c + y * c + x] = (f32::from(p[ch]) - self.mean[ch]) / self.std[ch];
                }
            }
        }
        Ok(out)
    }
}

/// A solid-colour PNG, for tests and examples.
pub fn solid_png(width: u32, height: u32, rgb: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(width, height, image::Rgb(rgb));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("encoding a PNG in memory cannot fail");
    out.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_resize_crop_and_normalise() {
        let r = Recipe {
            resize_shorter: 8,
            crop: 4,
            mean: [0.0, 0.0, 0.0],
            std: [255.0, 255.0, 255.0],
        };
        let t = r.tensor(&solid_png(32, 16, [255, 0, 51])).unwrap();
        assert_eq!(t.len(), 3 * 4 * 4);
        assert!(t[..16].iter().all(|v| (v - 1.0).abs() < 1e-6), "red plane");
        assert!(t[16..32].iter().all(|v| v.abs() < 1e-6), "green plane");
        assert!(t[32..].iter().all(|v| (v - 0.2).abs() < 1e-6), "blue plane");
    }

    #[test]
    fn corrupt_and_oversized_images_are_input_errors() {
        let r = Recipe::default();
        assert!(matches!(
            r.tensor(b"\x89PNG\r\n\x1a\nbroken"),
            Err(EngineError::Input(_))
        ));
        assert!(matches!(r.tensor(b"hello"), Err(EngineError::Input(_))));
        let big = vec![0u8; MAX_IMAGE_BYTES + 1];
        assert!(r.tensor(&big).unwrap_err().to_string().contains("over"));
    }
}
