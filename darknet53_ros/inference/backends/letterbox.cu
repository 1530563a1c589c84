// darknet53_ros GPU pre-processing: one decoded uint8 camera image (bgr8, rgb8, bgra8, mono8)
// -> its letterboxed, normalised slot of the engine's NCHW float32 input binding.
// Bilinear like cv2.resize INTER_LINEAR (pixel centres: src = (dst + 0.5) * scale - 0.5,
// clamped to the border), Darknet's grey padding, RGB planes scaled to [0, 1].
// One thread per network pixel; launch with grid (ceil(net_w / 32), ceil(net_h / 8)).
// gpu_preprocess.py (the launcher) mirrors this arithmetic in NumPy; keep them in step.

extern "C" __global__ void letterbox_nchw(
    const unsigned char* __restrict__ src, int src_w, int src_h, int src_pitch,
    int channels, int red, int green, int blue,
    float* __restrict__ dst, int net_w, int net_h,
    int new_w, int new_h, int pad_x, int pad_y,
    float scale_x, float scale_y, float pad_value)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= net_w || y >= net_h) {
        return;
    }
    const size_t plane = (size_t)net_w * (size_t)net_h;
    float* out = dst + (size_t)y * net_w + x;
    const int ix = x - pad_x;
    const int iy = y - pad_y;
    if (ix < 0 || iy < 0 || ix >= new_w || iy >= new_h) {
        out[0] = pad_value;
        out[plane] = pad_value;
        out[2 * plane] = pad_value;
        return;
    }
    float fx = ((float)ix + 0.5f) * scale_x - 0.5f;
    float fy = ((float)iy + 0.5f) * scale_y - 0.5f;
    int x0 = (int)floorf(fx);
    int y0 = (int)floorf(fy);
    float ax = fx - (float)x0;
    float ay = fy - (float)y0;
    if (x0 < 0) { x0 = 0; ax = 0.0f; }
    if (y0 < 0) { y0 = 0; ay = 0.0f; }
    if (x0 >= src_w - 1) { x0 = src_w - 1; ax = 0.0f; }
    if (y0 >= src_h - 1) { y0 = src_h - 1; ay = 0.0f; }
    const int x1 = min(x0 + 1, src_w - 1);
    const int y1 = min(y0 + 1, src_h - 1);
    const unsigned char* row0 = src + (size_t)y0 * src_pitch;
    const unsigned char* row1 = src + (size_t)y1 * src_pitch;
    const int order[3] = {red, green, blue};
    for (int c = 0; c < 3; ++c) {
        const int k = order[c];
        const float p00 = (float)row0[x0 * channels + k];
        const float p01 = (float)row0[x1 * channels + k];
        const float p10 = (float)row1[x0 * channels + k];
        const float p11 = (float)row1[x1 * channels + k];
        const float top = p00 + ax * (p01 - p00);
        const float bottom = p10 + ax * (p11 - p10);
        out[c * plane] = (top + ay * (bottom - top)) * (1.0f / 255.0f);
    }
}
