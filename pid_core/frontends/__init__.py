"""Front ends over the decoder: the command line (cli, cli_io), decode-batch (batch, batch_run)
and torchrun jobs (distributed).
"""
