//! Image preprocessing, driven by a recipe kept in the model's sidecar (not
//! in code paths per model): decode (JPEG, PNG), resize the shorter side,
//! centre-crop, scale each channel as `(x - mean) / std`, lay out as NCHW.

use serde::Deserialize;

use crate::EngineError;

/// How a model expects its images: either resize the shorter side and cut a
/// centred square (`resize_shorter`, `crop`: ImageNet classifiers), or resize
/// to a fixed `height` keeping the aspect ratio and pad on the right to
/// `width` (`height`, `width`: text-line models such as PP-OCR's).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    #[serde(default)]
    pub resize_shorter: u32,
    #[serde(default)]
    pub crop: u32,
    #[serde(default)]
    pub height: u32,
    #[serde(default)]
    pub width: u32,
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
            height: 0,
            width: 0,
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
    /// The tensor's spatial size: (height, width).
    pub fn size(&self) -> (usize, usize) {
        if self.height > 0 {
            (self.height as usize, self.width as usize)
        } else {
            (self.crop as usize, self.crop as usize)
        }
    }

    /// Checks the recipe is one of the two shapes.
    pub fn validate(&self) -> Result<(), String> {
        let crop = self.resize_shorter > 0 && self.crop > 0 && self.crop <= self.resize_shorter;
        let pad = self.height > 0 && self.width > 0;
        if crop == pad {
            return Err("preprocess needs either resize_shorter and crop (crop <= resize_shorter), or height and width".into());
        }
        if self.std.contains(&0.0) {
            return Err("preprocess std must not be 0".into());
        }
        Ok(())
    }

    /// Decodes `bytes` and returns a `[3, H, W]` tensor, channel-major.
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
        let (th, tw) = self.size();
        let mut out = vec![0f32; 3 * th * tw];
        let mut put = |x: usize, y: usize, p: &image::Rgb<u8>| {
            for ch in 0..3 {
                out[ch * th * tw + y * tw + x] = (f32::from(p[ch]) - self.mean[ch]) / self.std[ch];
            }
        };
        if self.height > 0 {
            // Fixed height, aspect kept, padded on the right with what 0 maps to.
            let nw = ((w as f32 * th as f32 / h as f32).ceil() as usize).clamp(1, tw);
            let resized = image::imageops::resize(
                &img,
                nw as u32,
                th as u32,
                image::imageops::FilterType::Triangle,
            );
            for y in 0..th {
                for x in 0..nw {
                    put(x, y, resized.get_pixel(x as u32, y as u32));
                }
            }
            // The padding is zero after normalisation, as PP-OCR pads.
            return Ok(out);
        }
        let scale = self.resize_shorter as f32 / w.min(h) as f32;
        let (nw, nh) = (
            ((w as f32 * scale).round() as u32).max(self.crop),
            ((h as f32 * scale).round() as u32).max(self.crop),
        );
        let resized = image::imageops::resize(&img, nw, nh, image::imageops::FilterType::Triangle);
        let (x0, y0) = ((nw - self.crop) / 2, (nh - self.crop) / 2);
        for y in 0..th {
            for x in 0..tw {
                put(x, y, resized.get_pixel(x0 + x as u32, y0 + y as u32));
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
            height: 0,
            width: 0,
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
    fn text_line_recipes_keep_the_aspect_and_pad_right() {
        let r = Recipe {
            resize_shorter: 0,
            crop: 0,
            height: 4,
            width: 16,
            mean: [127.5; 3],
            std: [127.5; 3],
        };
        r.validate().unwrap();
        // 20x10 -> 8x4, then 8 columns of padding.
        let t = r.tensor(&solid_png(20, 10, [255, 255, 255])).unwrap();
        assert_eq!(t.len(), 3 * 4 * 16);
        assert!((t[0] - 1.0).abs() < 1e-6 && (t[7] - 1.0).abs() < 1e-6);
        assert_eq!(t[8], 0.0);
        assert_eq!(t[15], 0.0);
        let both = Recipe {
            resize_shorter: 8,
            crop: 4,
            ..r.clone()
        };
        assert!(both.validate().is_err());
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
