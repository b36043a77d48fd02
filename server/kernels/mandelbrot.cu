// mandelbrot: the escape time of every pixel of a view, in double precision, one thread per
// pixel. The arithmetic is the host reference's, operation for operation (the module is
// compiled without contraction into fused multiply-adds), so every count matches it.

extern "C" __global__ void mandelbrot(unsigned int* __restrict__ iterations,
                                      unsigned int width, unsigned int height,
                                      unsigned int max_iter,
                                      double center_x, double center_y, double span)
{
    const unsigned int px = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned int py = blockIdx.y * blockDim.y + threadIdx.y;
    if (px >= width || py >= height) {
        return;
    }
    const double pixel = span / (double)width;
    const double half_w = 0.5 * (double)width;
    const double half_h = 0.5 * (double)height;
    const double c_re = center_x + pixel * (((double)px + 0.5) - half_w);
    const double c_im = center_y - pixel * (((double)py + 0.5) - half_h);
    double z_re = 0.0, z_im = 0.0;
    unsigned int count = max_iter;
    for (unsigned int i = 0; i < max_iter; ++i) {
        if (z_re * z_re + z_im * z_im > 4.0) {
            count = i;
            break;
        }
        const double re = z_re * z_re - z_im * z_im + c_re;
        z_im = (z_re + z_re) * z_im + c_im;
        z_re = re;
    }
    iterations[(size_t)py * width + px] = count;
}
